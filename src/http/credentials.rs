//! The one parser of `Authorization` credentials, used by the `AuthUser` extractor, the
//! per-user rate limiter and the operations token alike — so a spelling one of them accepts
//! cannot slip past another.
//!
//! RFC 9110 §11.4 (formerly RFC 7235 §2.1): `credentials = auth-scheme [ 1*SP ( token68 /
//! #auth-param ) ]`; the scheme is case-insensitive. We accept one or more spaces or tabs
//! after the scheme and surrounding whitespace, and require a non-empty token68
//! (`ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/"`, then `"="` padding only).

use axum::http::{header, HeaderMap};

/// The token of `Authorization: Bearer <token68>` in `headers`, or `None` when there is no such
/// header, when it is not the Bearer scheme or not well formed, or when the request carries
/// several `Authorization` headers (ambiguous: none of them is taken).
pub fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let value = values.next()?;
    if values.next().is_some() {
        return None;
    }
    parse_bearer(value.to_str().ok()?)
}

/// The token68 of a `Bearer` credential, or `None`.
pub fn parse_bearer(value: &str) -> Option<&str> {
    let value = value.trim_matches([' ', '\t']);
    let separator = value.find([' ', '\t'])?;
    let (scheme, rest) = value.split_at(separator);
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let token = rest.trim_start_matches([' ', '\t']);
    is_token68(token).then_some(token)
}

fn is_token68(token: &str) -> bool {
    let body = token.trim_end_matches('=');
    !body.is_empty()
        && body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~+/".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scheme_is_case_insensitive_and_any_run_of_spaces_or_tabs_separates() {
        for value in [
            "Bearer abc.def-ghi_jkl",
            "bearer abc.def-ghi_jkl",
            "BEARER abc.def-ghi_jkl",
            "BeArEr  abc.def-ghi_jkl",
            "Bearer\tabc.def-ghi_jkl",
            "Bearer \t abc.def-ghi_jkl ",
            " Bearer abc.def-ghi_jkl",
        ] {
            assert_eq!(parse_bearer(value), Some("abc.def-ghi_jkl"), "{value:?}");
        }
        assert_eq!(parse_bearer("Bearer a+b/c=="), Some("a+b/c=="));
    }

    #[test]
    fn other_schemes_and_malformed_credentials_are_none() {
        for value in [
            "",
            "Bearer",
            "Bearer ",
            "Bearerabc",
            "Basic abc",
            "Bearer abc def",
            "Bearer a=b",
            "Bearer ==",
            "Bearer abc,def",
            "Bearers abc",
            "Token abc",
        ] {
            assert_eq!(parse_bearer(value), None, "{value:?}");
        }
    }

    #[test]
    fn two_authorization_headers_are_none() {
        let mut headers = HeaderMap::new();
        headers.append(header::AUTHORIZATION, "Bearer one".parse().unwrap());
        assert_eq!(bearer_token(&headers), Some("one"));
        headers.append(header::AUTHORIZATION, "Bearer two".parse().unwrap());
        assert_eq!(bearer_token(&headers), None);
    }
}
