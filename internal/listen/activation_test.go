package listen

import (
	"errors"
	"os"
	"reflect"
	"strings"
	"testing"
)

func TestActivatedFDs(t *testing.T) {
	const pid = 4242
	tests := []struct {
		name    string
		env     map[string]string
		want    []int
		none    bool   // errors.Is(err, ErrNotActivated)
		wantErr string // error text
	}{
		{"one socket", map[string]string{"LISTEN_PID": "4242", "LISTEN_FDS": "1"}, []int{3}, false, ""},
		{"three sockets", map[string]string{"LISTEN_PID": "4242", "LISTEN_FDS": "3", "LISTEN_FDNAMES": "a:b:c"}, []int{3, 4, 5}, false, ""},
		{"not set", map[string]string{}, nil, true, "LISTEN_FDS is not set"},
		{"pid of another process", map[string]string{"LISTEN_PID": "1", "LISTEN_FDS": "2"}, nil, true, `LISTEN_PID is "1", not this process (4242)`},
		{"pid missing", map[string]string{"LISTEN_FDS": "2"}, nil, true, `LISTEN_PID is ""`},
		{"zero sockets", map[string]string{"LISTEN_PID": "4242", "LISTEN_FDS": "0"}, nil, true, "LISTEN_FDS is 0"},
		{"garbage count", map[string]string{"LISTEN_PID": "4242", "LISTEN_FDS": "two"}, nil, false, `LISTEN_FDS is "two"`},
		{"negative count", map[string]string{"LISTEN_PID": "4242", "LISTEN_FDS": "-1"}, nil, false, `LISTEN_FDS is "-1"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := activatedFDs(func(k string) string { return tt.env[k] }, pid)
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("fds %v, want %v", got, tt.want)
			}
			if tt.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("error %v, want one containing %q", err, tt.wantErr)
			}
			if errors.Is(err, ErrNotActivated) != tt.none {
				t.Errorf("errors.Is(%v, ErrNotActivated) = %v", err, !tt.none)
			}
		})
	}
}

// TestTakeActivatedUnsets checks that the variables are gone after reading,
// also when they were meant for another process.
func TestTakeActivatedUnsets(t *testing.T) {
	t.Setenv("LISTEN_PID", "1")
	t.Setenv("LISTEN_FDS", "1")
	t.Setenv("LISTEN_FDNAMES", "x")
	files, err := takeActivated()
	if len(files) != 0 || !errors.Is(err, ErrNotActivated) {
		t.Fatalf("took %d files, %v; want none", len(files), err)
	}
	for _, v := range activationVars {
		if _, ok := os.LookupEnv(v); ok {
			t.Errorf("%s still set", v)
		}
	}
}

// fakeActivation stands for n activated sockets (pipes: only their
// identity matters to pick).
func fakeActivation(t *testing.T, n int) *Activation {
	t.Helper()
	a := &Activation{taken: true}
	for i := range n {
		r, w, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		w.Close()
		a.files = append(a.files, &socketFile{fd: firstActivatedFD + i, f: r})
	}
	t.Cleanup(a.closeRest)
	return a
}

func TestActivationPick(t *testing.T) {
	tests := []struct {
		name    string
		n       int
		sels    []string
		want    [][]int // fds per pick
		wantErr string  // error of the last pick
	}{
		{"all", 2, []string{""}, [][]int{{3, 4}}, ""},
		{"one", 3, []string{"4"}, [][]int{{4}}, ""},
		{"one then the rest", 3, []string{"4", ""}, [][]int{{4}, {3, 5}}, ""},
		{"beyond the passed ones", 1, []string{"4"}, nil, "fd 4 was not passed: systemd passed 1 socket(s), fds 3..3"},
		{"the same twice", 2, []string{"3", "3"}, [][]int{{3}}, "fd 3 is named twice in hosts"},
		{"all twice", 1, []string{"", ""}, [][]int{{3}}, "every activated socket is already named"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := fakeActivation(t, tt.n)
			var got [][]int
			var err error
			for _, sel := range tt.sels {
				var files []*socketFile
				if files, err = a.pick(sel); err != nil {
					break
				}
				var fds []int
				for _, f := range files {
					fds = append(fds, f.fd)
					f.f.Close()
				}
				got = append(got, fds)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("picked %v, want %v", got, tt.want)
			}
			if tt.wantErr == "" && err != nil || tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
				t.Errorf("error %v, want %q", err, tt.wantErr)
			}
		})
	}
}

func TestActivationNotSet(t *testing.T) {
	t.Setenv("LISTEN_FDS", "")
	_, err := Open([]string{"fd://"}, Options{})
	if !errors.Is(err, ErrNotActivated) || !strings.Contains(err.Error(), "hosts: fd://: ") || !strings.Contains(err.Error(), "LISTEN_FDS is not set") {
		t.Errorf("Open(fd://) without activation: %v", err)
	}
}

func TestActivationCheck(t *testing.T) {
	t.Setenv("LISTEN_FDS", "")
	a := TakeActivation()
	if err := a.Check([]string{"unix:///run/t.sock", "tcp://127.0.0.1:2376"}); err != nil {
		t.Errorf("no fd:// entry: %v", err)
	}
	err := a.Check([]string{"unix:///run/t.sock", "fd://3"})
	if !errors.Is(err, ErrNotActivated) || !strings.HasPrefix(err.Error(), "hosts: fd://3: ") {
		t.Errorf("fd://3 without activation: %v", err)
	}
	if err := (&Activation{}).Check([]string{"fd://"}); err != nil {
		t.Errorf("not yet taken: %v", err)
	}
}
