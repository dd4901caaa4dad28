//! Credentials kept out of what is printed: NATS_URL (and any URL) may carry a user and
//! password or a token before its host.

/// `url`, or a comma-separated list of them as NATS_URL takes, with each `user:password@` (or
/// `token@`) replaced by `***@`.
pub fn redact_url(url: &str) -> String {
    url.split(',').map(redact_one).collect::<Vec<_>>().join(",")
}

fn redact_one(url: &str) -> String {
    let (scheme, rest) = match url.find("://") {
        Some(at) => url.split_at(at + 3),
        None => ("", url),
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}***@{}", &rest[at + 1..]),
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn users_passwords_and_tokens_are_replaced_and_the_rest_kept() {
        let cases = [
            ("nats://127.0.0.1:4222", "nats://127.0.0.1:4222"),
            ("nats://user:s3cret@nats:4222", "nats://***@nats:4222"),
            ("nats://t0ken@nats", "nats://***@nats"),
            (
                "nats://a:b@n1:4222,nats://n2:4222",
                "nats://***@n1:4222,nats://n2:4222",
            ),
            ("tls://u:p@w@host/x@y?q=@", "tls://***@host/x@y?q=@"),
            ("s3://bucket/prefix", "s3://bucket/prefix"),
            ("localhost:4222", "localhost:4222"),
        ];
        for (url, expected) in cases {
            assert_eq!(redact_url(url), expected, "{url}");
        }
    }
}
