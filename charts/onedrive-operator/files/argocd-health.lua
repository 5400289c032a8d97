-- Argo CD health check for onedrive-operator.dev OneDriveSite, OneDriveSiteSet and OneDriveTenant
-- (the same script serves the three kinds). It reads the conditions the way kstatus does:
--   no status yet, or a status written for an older generation  -> Progressing
--   Stalled=True (a person must act: licence, sign-in, credentials,
--     a removal the guard holds)                                    -> Degraded
--   Reconciling=True (waiting for a batch slot, being provisioned)  -> Progressing
--   Ready=True                                                      -> Healthy
--   anything else (Ready False or Unknown, not stalled)             -> Progressing
-- Install: docs/operations.md "Argo CD" (argocd-cm keys resource.customizations.health.<group>_<kind>).
local hs = {}

local function condition(type_)
  if obj.status == nil or obj.status.conditions == nil then
    return nil
  end
  for _, c in ipairs(obj.status.conditions) do
    if c.type == type_ then
      return c
    end
  end
  return nil
end

local function said(c, fallback)
  if c ~= nil and c.message ~= nil and c.message ~= "" then
    return c.reason .. ": " .. c.message
  end
  if c ~= nil and c.reason ~= nil then
    return c.reason
  end
  return fallback
end

local generation = obj.metadata.generation
if obj.status == nil then
  hs.status = "Progressing"
  hs.message = "waiting for onedrive-operator to write a status"
  return hs
end
if generation ~= nil and obj.status.observedGeneration ~= generation then
  hs.status = "Progressing"
  hs.message = "waiting for onedrive-operator to observe generation " .. tostring(generation)
  return hs
end

local ready = condition("Ready")
local stalled = condition("Stalled")
local reconciling = condition("Reconciling")
if stalled ~= nil and stalled.status == "True" then
  hs.status = "Degraded"
  hs.message = said(ready, said(stalled, "stalled"))
elseif reconciling ~= nil and reconciling.status == "True" then
  hs.status = "Progressing"
  hs.message = said(ready, said(reconciling, "reconciling"))
elseif ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
  hs.message = said(ready, "ready")
else
  hs.status = "Progressing"
  hs.message = said(ready, "waiting for the Ready condition")
end
return hs
