package api

import (
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/tether-net/tether/internal/engine"
)

// An open event stream ends when the daemon stops (CloseStreams, called
// from http.Server's shutdown), instead of holding the shutdown until its
// timeout; one opened afterwards ends at once.
func TestCloseStreamsEndsEvents(t *testing.T) {
	f := &fakeBackend{live: make(chan engine.Event)} // live, never closed: the stream stays open
	s := newFakeServer(f)
	ts := httptest.NewServer(s)
	defer ts.Close()
	resp, err := http.Get(ts.URL + "/events")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	ended := make(chan error, 1)
	go func() { _, err := io.ReadAll(resp.Body); ended <- err }()
	select {
	case err := <-ended:
		t.Fatalf("the stream ended before CloseStreams: %v", err)
	case <-time.After(100 * time.Millisecond):
	}
	s.CloseStreams()
	select {
	case err := <-ended:
		if err != nil {
			t.Fatalf("stream: %v", err)
		}
	case <-time.After(10 * time.Second): // a hang, not a performance threshold
		t.Fatal("the event stream is still open after CloseStreams")
	}
	again, err := http.Get(ts.URL + "/events")
	if err != nil {
		t.Fatal(err)
	}
	defer again.Body.Close()
	done := make(chan struct{})
	go func() { _, _ = io.ReadAll(again.Body); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("a stream opened after CloseStreams stays open")
	}
}
