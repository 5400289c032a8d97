//! Escaping a user name for each place a request carries it: an OData string literal (`'`
//! doubled), CSOM's XML (entities), a URL path segment (percent-encoded, see
//! [`super::graph::user_path`]). An unescaped quote in a literal is a 400 from SharePoint, and a
//! profile that can never be read hides the only per-user verdict after an enqueue.

/// `'o''neil@contoso.com'`: an OData string literal holding `s`.
pub fn odata_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// `s` as XML character data or an attribute value.
pub fn xml(s: &str) -> std::borrow::Cow<'_, str> {
    quick_xml::escape::escape(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_are_doubled_and_xml_is_entity_escaped() {
        assert_eq!(odata_literal("o'neil@contoso.com"), "'o''neil@contoso.com'");
        assert_eq!(odata_literal("i:0#.f|membership|a@b.c"), "'i:0#.f|membership|a@b.c'");
        assert_eq!(xml("o'neil&co<x>@contoso.com"), "o&apos;neil&amp;co&lt;x&gt;@contoso.com");
    }
}
