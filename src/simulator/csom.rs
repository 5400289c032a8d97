//! The subset of the CSOM `ProcessQuery` XML protocol the enqueue calls use: object paths
//! (`StaticMethod`, `Constructor`, `Method`, `Identity`), actions (`ObjectPath`, `Method`,
//! `Query`, `SetProperty`), `Array` parameters of `String` objects and scalar parameters
//! (`String`, `Boolean`, `Int64`) — what the enqueue, site-administrator and quota calls use.

use std::collections::BTreeMap;

use quick_xml::Reader;
use quick_xml::events::Event;

/// ProfileLoader's TypeId (`GetProfileLoader` static method).
pub const PROFILE_LOADER_TYPE: &str = "{9c42543a-91b3-4902-b2fe-14ccdefb6e2b}";
/// Tenant's TypeId (constructor).
pub const TENANT_TYPE: &str = "{268004ae-ef6b-4e9b-8425-127220d84719}";

#[derive(Clone, Debug, PartialEq)]
pub enum ObjectPath {
    StaticMethod {
        type_id: String,
        name: String,
    },
    Constructor {
        type_id: String,
    },
    /// A method whose result is an object (e.g. `RequestPersonalSites` → `SpoOperation`).
    Method {
        parent: String,
        call: Call,
    },
    Identity {
        name: String,
    },
}

#[derive(Clone, Debug, PartialEq, Default)]
pub struct Call {
    /// The method's name; a `SetProperty` action is a call named `set:<Property>`.
    pub name: String,
    /// The parameters' values in order, unescaped: an `Array` parameter's strings, or each scalar
    /// parameter's text.
    pub strings: Vec<String>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    ObjectPath { id: String, path: String },
    Method { id: String, path: String, call: Call },
    Query { id: String, path: String },
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Request {
    pub paths: BTreeMap<String, ObjectPath>,
    pub actions: Vec<Action>,
}

impl Request {
    /// Its method calls, with the id and target type of each: void methods on ProfileLoader
    /// (actions) and object-returning ones on Tenant (paths).
    pub fn calls(&self) -> Vec<(String, &'static str, Call)> {
        let mut calls = Vec::new();
        for a in &self.actions {
            if let Action::Method { id, path, call } = a {
                calls.push((id.clone(), self.type_of(path), call.clone()));
            }
        }
        for (id, p) in &self.paths {
            if let ObjectPath::Method { parent, call } = p {
                calls.push((id.clone(), self.type_of(parent), call.clone()));
            }
        }
        calls
    }

    /// The type a path ultimately refers to: `ProfileLoader`, `Tenant`, or `?`.
    pub fn type_of(&self, path: &str) -> &'static str {
        match self.paths.get(path) {
            Some(ObjectPath::StaticMethod { type_id, name })
                if type_id.eq_ignore_ascii_case(PROFILE_LOADER_TYPE) && name == "GetProfileLoader" =>
            {
                "ProfileLoader"
            }
            Some(ObjectPath::Constructor { type_id }) if type_id.eq_ignore_ascii_case(TENANT_TYPE) => {
                "Tenant"
            }
            _ => "?",
        }
    }
}

fn attr(e: &quick_xml::events::BytesStart, name: &str) -> Option<String> {
    e.attributes()
        .flatten()
        .find(|a| a.key.as_ref() == name.as_bytes())
        .and_then(|a| a.unescape_value().ok().map(|v| v.into_owned()))
}

/// Parses a `ProcessQuery` body; the error says what is wrong with it.
pub fn parse(xml: &str) -> Result<Request, String> {
    let mut reader = Reader::from_str(xml);
    let mut req = Request::default();
    let mut stack: Vec<String> = Vec::new();
    // The method (action or object path) whose parameters are being read.
    let mut method: Option<(String, String, Call, bool)> = None; // (id, target, call, is_object_path)
    let mut in_string = false;
    let mut text = String::new();
    let mut saw_request = false;
    loop {
        let event =
            reader.read_event().map_err(|e| format!("malformed XML at {}: {e}", reader.buffer_position()))?;
        match event {
            Event::Start(ref e) | Event::Empty(ref e) => {
                let empty = matches!(event, Event::Empty(_));
                let name = String::from_utf8_lossy(e.local_name().as_ref()).into_owned();
                let parent = stack.last().map(String::as_str).unwrap_or("");
                let grand = stack.len().checked_sub(2).map(|i| stack[i].as_str()).unwrap_or("");
                match (name.as_str(), parent) {
                    ("Request", "") => saw_request = true,
                    ("StaticMethod", "ObjectPaths") => {
                        req.paths.insert(
                            attr(e, "Id").unwrap_or_default(),
                            ObjectPath::StaticMethod {
                                type_id: attr(e, "TypeId").unwrap_or_default(),
                                name: attr(e, "Name").unwrap_or_default(),
                            },
                        );
                    }
                    ("Constructor", "ObjectPaths") => {
                        req.paths.insert(
                            attr(e, "Id").unwrap_or_default(),
                            ObjectPath::Constructor { type_id: attr(e, "TypeId").unwrap_or_default() },
                        );
                    }
                    ("Identity", "ObjectPaths") => {
                        req.paths.insert(
                            attr(e, "Id").unwrap_or_default(),
                            ObjectPath::Identity { name: attr(e, "Name").unwrap_or_default() },
                        );
                    }
                    ("Method", "ObjectPaths") | ("Method", "Actions") | ("SetProperty", "Actions") => {
                        let is_path = parent == "ObjectPaths";
                        let target = if is_path { attr(e, "ParentId") } else { attr(e, "ObjectPathId") };
                        let method_name = attr(e, "Name").unwrap_or_default();
                        let name =
                            if name == "SetProperty" { format!("set:{method_name}") } else { method_name };
                        let call = Call { name, strings: Vec::new() };
                        let entry =
                            (attr(e, "Id").unwrap_or_default(), target.unwrap_or_default(), call, is_path);
                        if empty {
                            finish_method(&mut req, entry);
                        } else {
                            method = Some(entry);
                        }
                    }
                    ("ObjectPath", "Actions") => req.actions.push(Action::ObjectPath {
                        id: attr(e, "Id").unwrap_or_default(),
                        path: attr(e, "ObjectPathId").unwrap_or_default(),
                    }),
                    ("Query", "Actions") => req.actions.push(Action::Query {
                        id: attr(e, "Id").unwrap_or_default(),
                        path: attr(e, "ObjectPathId").unwrap_or_default(),
                    }),
                    ("Parameter", "Parameters" | "SetProperty")
                        if method.is_some()
                            && matches!(attr(e, "Type").as_deref(), Some("String" | "Boolean" | "Int64")) =>
                    {
                        if empty {
                            method.as_mut().expect("checked").2.strings.push(String::new());
                        } else {
                            in_string = true;
                            text.clear();
                        }
                    }
                    ("Object", "Parameter")
                        if grand == "Parameters"
                            && method.is_some()
                            && attr(e, "Type").as_deref() == Some("String") =>
                    {
                        if empty {
                            method.as_mut().expect("checked").2.strings.push(String::new());
                        } else {
                            in_string = true;
                            text.clear();
                        }
                    }
                    _ => {}
                }
                if !empty {
                    stack.push(name);
                }
            }
            Event::Text(t) if in_string => {
                text.push_str(&t.decode().map_err(|e| format!("bad text: {e}"))?);
            }
            Event::GeneralRef(r) if in_string => {
                let name = String::from_utf8_lossy(r.as_ref()).into_owned();
                let ch = match name.as_str() {
                    "amp" => "&".to_string(),
                    "lt" => "<".to_string(),
                    "gt" => ">".to_string(),
                    "quot" => "\"".to_string(),
                    "apos" => "'".to_string(),
                    n if n.starts_with("#x") => u32::from_str_radix(&n[2..], 16)
                        .ok()
                        .and_then(char::from_u32)
                        .map(String::from)
                        .ok_or(format!("bad character reference &{n};"))?,
                    n if n.starts_with('#') => n[1..]
                        .parse::<u32>()
                        .ok()
                        .and_then(char::from_u32)
                        .map(String::from)
                        .ok_or(format!("bad character reference &{n};"))?,
                    n => return Err(format!("unknown entity &{n};")),
                };
                text.push_str(&ch);
            }
            Event::End(e) => {
                let name = String::from_utf8_lossy(e.local_name().as_ref()).into_owned();
                stack.pop();
                if (name == "Object" || name == "Parameter") && in_string {
                    in_string = false;
                    method.as_mut().expect("inside a method").2.strings.push(std::mem::take(&mut text));
                } else if (name == "Method" || name == "SetProperty")
                    && let Some(m) = method.take()
                {
                    finish_method(&mut req, m);
                }
            }
            Event::Eof => break,
            _ => {}
        }
    }
    if !saw_request {
        return Err("the body is not a CSOM <Request>".into());
    }
    Ok(req)
}

fn finish_method(req: &mut Request, (id, target, call, is_path): (String, String, Call, bool)) {
    if is_path {
        req.paths.insert(id, ObjectPath::Method { parent: target, call });
    } else {
        req.actions.push(Action::Method { id, path: target, call });
    }
}

/// XML-escapes text for an element body.
#[cfg(test)]
pub fn escape(s: &str) -> String {
    quick_xml::escape::escape(s).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_enqueue_shapes_and_unescapes_emails() {
        let profile_loader = format!(
            r#"<Request xmlns="http://schemas.microsoft.com/sharepoint/clientquery/2009" SchemaVersion="15.0.0.0" LibraryVersion="16.0.0.0" ApplicationName="t"><Actions><ObjectPath Id="2" ObjectPathId="1" /><Method Name="CreatePersonalSiteEnqueueBulk" Id="3" ObjectPathId="1"><Parameters><Parameter Type="Array"><Object Type="String">{}</Object><Object Type="String">b@x.com</Object><Object Type="String" /></Parameter></Parameters></Method></Actions><ObjectPaths><StaticMethod Id="1" Name="GetProfileLoader" TypeId="{PROFILE_LOADER_TYPE}" /></ObjectPaths></Request>"#,
            escape("o'neil&co<1>@x.com")
        );
        let r = parse(&profile_loader).unwrap();
        assert_eq!(r.type_of("1"), "ProfileLoader");
        let Action::Method { call, path, .. } = &r.actions[1] else { panic!("{r:?}") };
        assert_eq!(path, "1");
        assert_eq!(call.name, "CreatePersonalSiteEnqueueBulk");
        assert_eq!(call.strings, vec!["o'neil&co<1>@x.com", "b@x.com", ""]);

        let tenant = format!(
            r#"<Request xmlns="http://schemas.microsoft.com/sharepoint/clientquery/2009" SchemaVersion="15.0.0.0" LibraryVersion="16.0.0.0" ApplicationName="t"><Actions><ObjectPath Id="2" ObjectPathId="1" /><ObjectPath Id="4" ObjectPathId="3" /><Query Id="5" ObjectPathId="3"><Query SelectAllProperties="true"><Properties /></Query></Query></Actions><ObjectPaths><Constructor Id="1" TypeId="{TENANT_TYPE}" /><Method Id="3" ParentId="1" Name="RequestPersonalSites"><Parameters><Parameter Type="Array"><Object Type="String">a@x.com</Object></Parameter></Parameters></Method></ObjectPaths></Request>"#
        );
        let r = parse(&tenant).unwrap();
        assert_eq!(r.type_of("1"), "Tenant");
        assert_eq!(
            r.paths["3"],
            ObjectPath::Method {
                parent: "1".into(),
                call: Call { name: "RequestPersonalSites".into(), strings: vec!["a@x.com".into()] }
            }
        );
        assert!(r.actions.contains(&Action::Query { id: "5".into(), path: "3".into() }));
        assert!(parse("<x/>").is_err());
    }
}
