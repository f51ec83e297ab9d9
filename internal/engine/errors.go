package engine

import (
	"errors"
	"fmt"
)

// Kind classifies an engine error so front ends can map it (the API to HTTP
// status codes, the CLI to exit codes) without parsing messages.
type Kind int

const (
	KindInternal  Kind = iota
	KindInvalid        // bad input: 400
	KindNotFound       // 404
	KindConflict       // duplicate name, address in use: 409
	KindForbidden      // predefined network, active endpoints: 403
)

// Error is an engine error with a kind and a user-facing message.
type Error struct {
	Kind Kind
	Err  error
}

func (e *Error) Error() string { return e.Err.Error() }
func (e *Error) Unwrap() error { return e.Err }

func kindf(k Kind, format string, args ...any) error {
	return &Error{Kind: k, Err: fmt.Errorf(format, args...)}
}

func invalidf(format string, args ...any) error   { return kindf(KindInvalid, format, args...) }
func notFoundf(format string, args ...any) error  { return kindf(KindNotFound, format, args...) }
func conflictf(format string, args ...any) error  { return kindf(KindConflict, format, args...) }
func forbiddenf(format string, args ...any) error { return kindf(KindForbidden, format, args...) }

// KindOf returns the kind of err (KindInternal when it carries none).
func KindOf(err error) Kind {
	var e *Error
	if errors.As(err, &e) {
		return e.Kind
	}
	return KindInternal
}
