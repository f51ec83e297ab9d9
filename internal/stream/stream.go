// Package stream carries a process's stdio over one hijacked HTTP connection.
//
// After the daemon answers "101 Switching Protocols" both sides speak frames:
// an 8-byte header (stream id, three zero bytes, big-endian payload length)
// then the payload, the same header Docker's multiplexed attach streams use,
// so the framing is familiar to anyone who has debugged `docker exec`.
// Stream ids: 0 stdin (client to daemon; an empty frame closes stdin),
// 1 stdout, 2 stderr, 3 exit (payload: 4-byte big-endian exit code, last frame).
package stream

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"
)

const (
	Stdin  byte = 0
	Stdout byte = 1
	Stderr byte = 2
	Exit   byte = 3

	maxFrame = 1 << 20
)

// Writer writes frames of one stream id; it is safe for concurrent use with
// other Writers sharing the same lock.
type Writer struct {
	mu *sync.Mutex
	w  io.Writer
	id byte
}

// NewWriters returns stdout and stderr writers sharing one connection.
func NewWriters(w io.Writer) (stdout, stderr *Writer) {
	mu := &sync.Mutex{}
	return &Writer{mu, w, Stdout}, &Writer{mu, w, Stderr}
}

func (w *Writer) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := 0
	for len(p) > 0 {
		chunk := p
		if len(chunk) > maxFrame {
			chunk = chunk[:maxFrame]
		}
		if err := writeFrame(w.w, w.id, chunk); err != nil {
			return n, err
		}
		n += len(chunk)
		p = p[len(chunk):]
	}
	return n, nil
}

// WriteExit sends the exit frame; nothing may be written after it.
func WriteExit(w *Writer, code int) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], uint32(int32(code)))
	return writeFrame(w.w, Exit, b[:])
}

func writeFrame(w io.Writer, id byte, p []byte) error {
	var hdr [8]byte
	hdr[0] = id
	binary.BigEndian.PutUint32(hdr[4:], uint32(len(p)))
	if _, err := w.Write(hdr[:]); err != nil {
		return err
	}
	_, err := w.Write(p)
	return err
}

func readFrame(r io.Reader, buf []byte) (byte, []byte, error) {
	var hdr [8]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return 0, nil, err
	}
	n := binary.BigEndian.Uint32(hdr[4:])
	if n > maxFrame {
		return 0, nil, fmt.Errorf("stream frame of %d bytes exceeds %d", n, maxFrame)
	}
	if cap(buf) < int(n) {
		buf = make([]byte, n)
	}
	buf = buf[:n]
	if _, err := io.ReadFull(r, buf); err != nil {
		return 0, nil, err
	}
	return hdr[0], buf, nil
}

// StdinReader returns a reader of the client's stdin frames; it reports EOF
// on an empty frame or when the connection closes.
func StdinReader(r io.Reader) io.Reader {
	pr, pw := io.Pipe()
	go func() {
		buf := make([]byte, 32*1024)
		for {
			id, p, err := readFrame(r, buf)
			if err != nil || (id == Stdin && len(p) == 0) {
				pw.Close()
				return
			}
			if id != Stdin {
				continue
			}
			if _, err := pw.Write(p); err != nil {
				return
			}
		}
	}()
	return pr
}

// SendStdin copies src to the connection as stdin frames and closes stdin
// with an empty frame.
func SendStdin(w io.Writer, src io.Reader) error {
	buf := make([]byte, 32*1024)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if werr := writeFrame(w, Stdin, buf[:n]); werr != nil {
				return werr
			}
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				return writeFrame(w, Stdin, nil)
			}
			return err
		}
	}
}

// Receive demultiplexes stdout and stderr frames until the exit frame and
// returns the exit code.
func Receive(r io.Reader, stdout, stderr io.Writer) (int, error) {
	buf := make([]byte, 32*1024)
	for {
		id, p, err := readFrame(r, buf)
		if err != nil {
			return -1, fmt.Errorf("stream ended before the exit status: %w", err)
		}
		switch id {
		case Stdout:
			_, err = stdout.Write(p)
		case Stderr:
			_, err = stderr.Write(p)
		case Exit:
			if len(p) != 4 {
				return -1, fmt.Errorf("malformed exit frame of %d bytes", len(p))
			}
			return int(int32(binary.BigEndian.Uint32(p))), nil
		}
		if err != nil {
			return -1, err
		}
	}
}
