package main

import (
	"bytes"
	"encoding/json"
	"io"
	"strings"
)

// Secrets in output: the password of a URL setting, and the redactor that
// keeps every secret value out of logs and errors.

// urlUserinfo returns the bounds of the user information of a URL
// (scheme://userinfo@host...), or ok false. It does not parse the URL, so
// that it works on malformed ones too; the last @ ends the user
// information, as a password may hold an unescaped @.
func urlUserinfo(raw string) (start, end int, ok bool) {
	i := strings.Index(raw, "://")
	if i < 0 {
		return 0, 0, false
	}
	j := strings.LastIndex(raw, "@")
	if j <= i+3 {
		return 0, 0, false
	}
	return i + 3, j, true
}

// urlPassword returns the password of a URL (or its whole user
// information when it has no colon, as redis://secret@host reads it):
// the secret part of FOOTFALL_VALKEY_URL.
func urlPassword(raw string) string {
	start, end, ok := urlUserinfo(raw)
	if !ok {
		return ""
	}
	info := raw[start:end]
	if _, pass, found := strings.Cut(info, ":"); found {
		return pass
	}
	return info
}

// redactURL replaces the password of a URL with ***.
func redactURL(raw string) string {
	start, end, ok := urlUserinfo(raw)
	if !ok {
		return raw
	}
	user, _, found := strings.Cut(raw[start:end], ":")
	if !found {
		return raw[:start] + "***" + raw[end:]
	}
	return raw[:start] + user + ":***" + raw[end:]
}

// redactor keeps secrets out of output: it replaces every secret value
// (and its JSON-escaped form, as a JSON log line would hold it) with
// [redacted] in log lines and error messages.
type redactor struct {
	olds [][]byte
}

var redactedMark = []byte("[redacted]")

func newRedactor(secrets []string) *redactor {
	r := &redactor{}
	for _, s := range secrets {
		if s == "" {
			continue
		}
		r.olds = append(r.olds, []byte(s))
		if q, err := json.Marshal(s); err == nil {
			if esc := q[1 : len(q)-1]; string(esc) != s {
				r.olds = append(r.olds, esc)
			}
		}
	}
	return r
}

func (r *redactor) redact(p []byte) []byte {
	for _, old := range r.olds {
		if bytes.Contains(p, old) {
			p = bytes.ReplaceAll(p, old, redactedMark)
		}
	}
	return p
}

// writer returns w with secrets redacted from each write (a log line).
func (r *redactor) writer(w io.Writer) io.Writer {
	if len(r.olds) == 0 {
		return w
	}
	return redactingWriter{r: r, w: w}
}

type redactingWriter struct {
	r *redactor
	w io.Writer
}

func (rw redactingWriter) Write(p []byte) (int, error) {
	if _, err := rw.w.Write(rw.r.redact(p)); err != nil {
		return 0, err
	}
	return len(p), nil
}

// err returns err with secrets redacted from its message; errors.Is and
// errors.As still see the original (a configError stays exit code 2).
func (r *redactor) err(err error) error {
	if err == nil {
		return nil
	}
	msg := err.Error()
	if red := string(r.redact([]byte(msg))); red != msg {
		return &redactedError{msg: red, err: err}
	}
	return err
}

type redactedError struct {
	msg string
	err error
}

func (e *redactedError) Error() string { return e.msg }
func (e *redactedError) Unwrap() error { return e.err }
