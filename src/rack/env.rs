//! Building the Rack env hash for one request, from a decoded
//! `REQUEST_HEAD` frame.
//!
//! Keys and constant values are frozen Ruby strings made once per process
//! and kept alive with `register_mark_object`; `HTTP_*` keys are cached by
//! header name, so a request allocates only its values. All values are
//! binary (ASCII-8BIT) strings: the bytes are exactly what the client sent,
//! whatever their encoding.

use std::collections::HashMap;

use magnus::{prelude::*, value::ReprValue, Error, RArray, RClass, RHash, RString, Ruby, Value};

use crate::protocol::RequestHead;

/// Cached `HTTP_*` keys beyond this many distinct names are built per
/// request instead (a client inventing names must not grow memory).
const HEADER_KEY_CACHE: usize = 512;

/// The request body as the front end delivered it.
pub enum Input<'a> {
    Bytes(&'a [u8]),
    File(&'a [u8]),
}

struct Keys {
    request_method: RString,
    script_name: RString,
    path_info: RString,
    query_string: RString,
    server_name: RString,
    server_port: RString,
    server_protocol: RString,
    http_version: RString,
    request_uri: RString,
    remote_addr: RString,
    remote_port: RString,
    content_type: RString,
    content_length: RString,
    https: RString,
    rack_version: RString,
    rack_url_scheme: RString,
    rack_input: RString,
    rack_errors: RString,
    rack_multithread: RString,
    rack_multiprocess: RString,
    rack_run_once: RString,
    rack_hijack_p: RString,
}

pub struct EnvBuilder {
    keys: Keys,
    empty: RString,
    http: RString,
    https: RString,
    on: RString,
    http11: RString,
    rack_version: RArray,
    errors: Value,
    string_io: RClass,
    file: RClass,
    header_keys: HashMap<Vec<u8>, RString>,
    /// `rack.multithread`: the worker runs several request threads.
    multithread: bool,
}

fn permanent(ruby: &Ruby, s: &str) -> RString {
    let s = ruby.str_new(s);
    s.freeze();
    ruby.gc_register_mark_object(s);
    s
}

impl EnvBuilder {
    /// One per session (each request thread builds its own envs).
    pub fn new(ruby: &Ruby, multithread: bool) -> Result<Self, Error> {
        let k = |s| permanent(ruby, s);
        let keys = Keys {
            request_method: k("REQUEST_METHOD"),
            script_name: k("SCRIPT_NAME"),
            path_info: k("PATH_INFO"),
            query_string: k("QUERY_STRING"),
            server_name: k("SERVER_NAME"),
            server_port: k("SERVER_PORT"),
            server_protocol: k("SERVER_PROTOCOL"),
            http_version: k("HTTP_VERSION"),
            request_uri: k("REQUEST_URI"),
            remote_addr: k("REMOTE_ADDR"),
            remote_port: k("REMOTE_PORT"),
            content_type: k("CONTENT_TYPE"),
            content_length: k("CONTENT_LENGTH"),
            https: k("HTTPS"),
            rack_version: k("rack.version"),
            rack_url_scheme: k("rack.url_scheme"),
            rack_input: k("rack.input"),
            rack_errors: k("rack.errors"),
            rack_multithread: k("rack.multithread"),
            rack_multiprocess: k("rack.multiprocess"),
            rack_run_once: k("rack.run_once"),
            rack_hijack_p: k("rack.hijack?"),
        };
        let rack_version = ruby.ary_from_vec(vec![1i64, 3]);
        rack_version.freeze();
        ruby.gc_register_mark_object(rack_version);
        let empty = ruby.str_from_slice(b"");
        empty.freeze();
        ruby.gc_register_mark_object(empty);
        // Not `eval`: Ruby refuses it on a thread other than the main one.
        let errors: Value = crate::rack::vm::rustrack_module(ruby).funcall("stderr", ())?;
        ruby.gc_register_mark_object(errors);
        let string_io: RClass = ruby.class_object().const_get("StringIO")?;
        let file: RClass = ruby.class_object().const_get("File")?;
        Ok(EnvBuilder {
            keys,
            empty,
            http: permanent(ruby, "http"),
            https: permanent(ruby, "https"),
            on: permanent(ruby, "on"),
            http11: permanent(ruby, "HTTP/1.1"),
            rack_version,
            errors,
            string_io,
            file,
            header_keys: HashMap::new(),
            multithread,
        })
    }

    fn bin(&self, ruby: &Ruby, b: &[u8]) -> RString {
        if b.is_empty() {
            self.empty
        } else {
            ruby.str_from_slice(b)
        }
    }

    /// Builds the env; returns it with its `rack.input`, which the caller
    /// closes after the request.
    pub fn build(
        &mut self,
        ruby: &Ruby,
        head: &RequestHead<'_>,
        input: Input<'_>,
    ) -> Result<(RHash, Value), Error> {
        let env = ruby.hash_new();
        let k = &self.keys;
        env.aset(k.request_method, self.bin(ruby, head.method))?;
        match head.script_name {
            [] => env.aset(k.script_name, self.empty)?,
            prefix => env.aset(k.script_name, self.bin(ruby, prefix))?,
        }
        env.aset(k.path_info, self.bin(ruby, head.path))?;
        env.aset(k.query_string, self.bin(ruby, head.query))?;
        env.aset(k.request_uri, self.bin(ruby, head.target))?;
        env.aset(k.server_name, self.bin(ruby, head.server_name))?;
        env.aset(k.server_port, self.bin(ruby, head.server_port))?;
        let protocol = if head.protocol == b"HTTP/1.1" {
            self.http11
        } else {
            self.bin(ruby, head.protocol)
        };
        env.aset(k.server_protocol, protocol)?;
        env.aset(k.http_version, protocol)?;
        env.aset(k.remote_addr, self.bin(ruby, head.remote_addr))?;
        if !head.remote_port.is_empty() {
            env.aset(k.remote_port, self.bin(ruby, head.remote_port))?;
        }
        let https = head.scheme == b"https";
        env.aset(
            k.rack_url_scheme,
            if https { self.https } else { self.http },
        )?;
        if https {
            env.aset(k.https, self.on)?;
        }
        env.aset(k.rack_version, self.rack_version)?;
        env.aset(k.rack_errors, self.errors)?;
        env.aset(k.rack_multithread, self.multithread)?;
        env.aset(k.rack_multiprocess, true)?;
        env.aset(k.rack_run_once, false)?;
        env.aset(k.rack_hijack_p, false)?;

        let (content_type, content_length) = (k.content_type, k.content_length);
        for &(name, value) in &head.headers {
            let key = match name {
                b"content-type" => content_type,
                b"content-length" => content_length,
                _ => match self.header_key(ruby, name) {
                    Some(key) => key,
                    None => continue,
                },
            };
            env.aset(key, self.bin(ruby, value))?;
        }

        let input: Value = match input {
            Input::Bytes(b) => self.string_io.funcall("new", (self.bin(ruby, b),))?,
            Input::File(path) => self
                .file
                .funcall("open", (ruby.str_from_slice(path), "rb"))?,
        };
        env.aset(self.keys.rack_input, input)?;
        Ok((env, input))
    }

    /// `HTTP_` + the name upper-cased with `-` as `_`. Names that already
    /// contain `_` are dropped: they would be indistinguishable from the
    /// `-` spelling, which lets a client spoof headers a proxy set. `Proxy`
    /// is dropped too (httpoxy).
    fn header_key(&mut self, ruby: &Ruby, name: &[u8]) -> Option<RString> {
        if let Some(key) = self.header_keys.get(name) {
            return Some(*key);
        }
        let key = rack_header_key(name)?;
        let key = ruby.str_from_slice(&key);
        key.freeze();
        if self.header_keys.len() < HEADER_KEY_CACHE {
            ruby.gc_register_mark_object(key);
            self.header_keys.insert(name.to_vec(), key);
        }
        Some(key)
    }
}

/// The env key for a request header, or None when it must not reach the app.
/// Only names of letters, digits and `-` get one (as nginx's default
/// `ignore_invalid_headers`), so a key is always `HTTP_[A-Z0-9_]+` and no
/// two names share one. `Content-Type`/`Content-Length` never become
/// `HTTP_` keys (Rack SPEC); the env builder maps them itself.
pub fn rack_header_key(name: &[u8]) -> Option<Vec<u8>> {
    if name.is_empty()
        || !name.iter().all(|&b| b.is_ascii_alphanumeric() || b == b'-')
        || [&b"proxy"[..], b"content-type", b"content-length"]
            .iter()
            .any(|n| name.eq_ignore_ascii_case(n))
    {
        return None;
    }
    let mut key = Vec::with_capacity(5 + name.len());
    key.extend_from_slice(b"HTTP_");
    key.extend(name.iter().map(|&b| match b {
        b'-' => b'_',
        b => b.to_ascii_uppercase(),
    }));
    Some(key)
}

#[cfg(test)]
mod tests {
    use super::rack_header_key;

    #[test]
    fn header_keys_follow_cgi_rules() {
        assert_eq!(
            rack_header_key(b"x-forwarded-for").unwrap(),
            b"HTTP_X_FORWARDED_FOR"
        );
        assert_eq!(rack_header_key(b"host").unwrap(), b"HTTP_HOST");
        assert_eq!(rack_header_key(b"x_forwarded_for"), None);
        assert_eq!(rack_header_key(b"Proxy"), None);
    }

    /// Found by fuzz/ (rack_headers): any byte but "-" passed through, so
    /// "a.b" gave "HTTP_A.B" and "x\0y" a key with a NUL in it; and a
    /// mixed-case Content-Type became HTTP_CONTENT_TYPE, which Rack forbids.
    #[test]
    fn header_keys_are_only_letters_digits_and_underscores() {
        assert_eq!(rack_header_key(b"x-a1").unwrap(), b"HTTP_X_A1");
        for name in [&b"a.b"[..], b"x\0y", b"a b", b"caf\xc3\xa9", b"x:y", b"a~b"] {
            assert_eq!(rack_header_key(name), None, "{name:?}");
        }
        assert_eq!(rack_header_key(b"Content-Type"), None);
        assert_eq!(rack_header_key(b"content-length"), None);
    }
}
