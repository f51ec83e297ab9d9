package stream

import (
	"bytes"
	"io"
	"strings"
	"testing"
)

func TestRoundTrip(t *testing.T) {
	tests := []struct {
		name           string
		stdout, stderr string
		code           int
	}{
		{"empty", "", "", 0},
		{"both", "hello\n", "oops\n", 3},
		{"large", strings.Repeat("x", 3*maxFrame+7), "", 255},
		{"negative", "", "", -1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var conn bytes.Buffer
			o, e := NewWriters(&conn)
			io.WriteString(o, tt.stdout)
			io.WriteString(e, tt.stderr)
			if err := WriteExit(o, tt.code); err != nil {
				t.Fatal(err)
			}
			var gotOut, gotErr bytes.Buffer
			code, err := Receive(&conn, &gotOut, &gotErr)
			if err != nil {
				t.Fatal(err)
			}
			if code != tt.code || gotOut.String() != tt.stdout || gotErr.String() != tt.stderr {
				t.Fatalf("got code %d out %d bytes err %q", code, gotOut.Len(), gotErr.String())
			}
		})
	}
}

func TestStdin(t *testing.T) {
	var conn bytes.Buffer
	if err := SendStdin(&conn, strings.NewReader("line1\nline2\n")); err != nil {
		t.Fatal(err)
	}
	conn.WriteString("garbage after close is never read")
	got, err := io.ReadAll(StdinReader(&conn))
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != "line1\nline2\n" {
		t.Fatalf("stdin = %q", got)
	}
}

func TestTruncatedStream(t *testing.T) {
	var conn bytes.Buffer
	o, _ := NewWriters(&conn)
	io.WriteString(o, "partial")
	if _, err := Receive(&conn, io.Discard, io.Discard); err == nil {
		t.Fatal("a stream without exit frame must be an error")
	}
	if _, err := Receive(bytes.NewReader([]byte{1, 0, 0, 0, 0xff, 0xff, 0xff, 0xff}), io.Discard, io.Discard); err == nil {
		t.Fatal("an oversized frame must be an error")
	}
}
