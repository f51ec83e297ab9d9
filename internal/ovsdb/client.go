// Package ovsdb is a small client of the Open vSwitch database protocol
// (RFC 7047): JSON-RPC 1.0 over a stream socket to ovsdb-server. It does
// what Tether's OVS driver needs and no more: "transact" with insert,
// update, mutate, delete, select and wait operations (named UUIDs, per
// operation errors), answering the server's "echo" keepalives, and a few
// helpers for the Open_vSwitch database (vswitch.go): ensure a bridge, add,
// find and delete ports. No monitor: the driver reads what it needs when
// it needs it.
//
// One connection carries any number of concurrent requests: a reader
// goroutine matches responses to requests by id and answers the server's
// requests (echo) itself; writes are serialised.
package ovsdb

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
)

// ErrClosed is returned for requests on a closed or broken connection.
var ErrClosed = errors.New("ovsdb: connection closed")

// Client is a connection to an OVSDB server.
type Client struct {
	conn net.Conn
	wmu  sync.Mutex // serialises writes

	mu      sync.Mutex
	nextID  uint64
	pending map[uint64]chan response
	err     error         // why the connection ended; set once
	done    chan struct{} // closed when the reader stops
}

type response struct {
	result json.RawMessage
	err    error
}

// Dial connects to an OVSDB server at addr: "unix:PATH" (ovsdb-server's
// punix: remote, e.g. unix:/run/openvswitch/db.sock) or "tcp:HOST:PORT".
func Dial(ctx context.Context, addr string) (*Client, error) {
	network, address, err := ParseAddr(addr)
	if err != nil {
		return nil, err
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, network, address)
	if err != nil {
		return nil, fmt.Errorf("ovsdb: connect to %s: %w", addr, err)
	}
	return NewClient(conn), nil
}

// ParseAddr splits an OVSDB address ("unix:PATH", "tcp:HOST:PORT") into a
// Go network and address.
func ParseAddr(addr string) (network, address string, err error) {
	kind, rest, ok := strings.Cut(addr, ":")
	switch {
	case ok && kind == "unix" && rest != "":
		return "unix", rest, nil
	case ok && kind == "tcp" && rest != "":
		return "tcp", rest, nil
	}
	return "", "", fmt.Errorf("ovsdb: address %q: want unix:PATH or tcp:HOST:PORT", addr)
}

// NewClient runs the protocol over an established connection (tests use a
// socketpair). The client owns conn and closes it on Close.
func NewClient(conn net.Conn) *Client {
	c := &Client{conn: conn, pending: map[uint64]chan response{}, done: make(chan struct{})}
	go c.read()
	return c
}

// Close ends the connection; requests in flight fail with ErrClosed.
func (c *Client) Close() error {
	err := c.conn.Close()
	<-c.done
	return err
}

// message is any JSON-RPC 1.0 message: a request (method, params, id), a
// notification (id null) or a response (result, error, id).
type message struct {
	Method string          `json:"method,omitempty"`
	Params json.RawMessage `json:"params,omitempty"`
	Result json.RawMessage `json:"result,omitempty"`
	Error  json.RawMessage `json:"error,omitempty"`
	ID     json.RawMessage `json:"id"`
}

// read decodes messages until the connection ends, then fails every
// request still waiting.
func (c *Client) read() {
	defer close(c.done)
	dec := json.NewDecoder(bufio.NewReader(c.conn))
	var err error
	for {
		var m message
		if err = dec.Decode(&m); err != nil {
			break
		}
		if m.Method != "" {
			c.serve(m)
			continue
		}
		c.deliver(m)
	}
	c.mu.Lock()
	c.err = fmt.Errorf("%w: %v", ErrClosed, err)
	for id, ch := range c.pending {
		ch <- response{err: c.err}
		delete(c.pending, id)
	}
	c.mu.Unlock()
}

// serve answers the server's requests: "echo" (the keepalive; RFC 7047
// 4.1.11: reply with the params as the result). Notifications (id null)
// and other methods need no answer from this client.
func (c *Client) serve(m message) {
	if m.Method != "echo" || len(m.ID) == 0 || string(m.ID) == "null" {
		return
	}
	params := m.Params
	if len(params) == 0 {
		params = json.RawMessage("[]")
	}
	reply := struct {
		Result json.RawMessage `json:"result"`
		Error  any             `json:"error"`
		ID     json.RawMessage `json:"id"`
	}{params, nil, m.ID}
	_ = c.write(reply) // a broken connection shows in the reader
}

// deliver hands a response to the request waiting for its id.
func (c *Client) deliver(m message) {
	id, err := strconv.ParseUint(string(m.ID), 10, 64)
	if err != nil {
		return // not one of ours (ids are numbers)
	}
	c.mu.Lock()
	ch, ok := c.pending[id]
	delete(c.pending, id)
	c.mu.Unlock()
	if !ok {
		return
	}
	if e := rpcError(m.Error); e != nil {
		ch <- response{err: e}
		return
	}
	ch <- response{result: m.Result}
}

// rpcError turns a response's error member into an error (nil for null).
// ovsdb-server sends a string or an object {"error", "details"}.
func rpcError(raw json.RawMessage) error {
	if len(raw) == 0 || string(raw) == "null" {
		return nil
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return fmt.Errorf("ovsdb: %s", s)
	}
	var o struct{ Error, Details string }
	if json.Unmarshal(raw, &o) == nil && o.Error != "" {
		if o.Details != "" {
			return fmt.Errorf("ovsdb: %s: %s", o.Error, o.Details)
		}
		return fmt.Errorf("ovsdb: %s", o.Error)
	}
	return fmt.Errorf("ovsdb: error %s", raw)
}

func (c *Client) write(v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	_, err = c.conn.Write(b)
	return err
}

// call sends a request and waits for its response or ctx.
func (c *Client) call(ctx context.Context, method string, params []any) (json.RawMessage, error) {
	ch := make(chan response, 1)
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		return nil, c.err
	}
	c.nextID++
	id := c.nextID
	c.pending[id] = ch
	c.mu.Unlock()
	req := struct {
		Method string `json:"method"`
		Params []any  `json:"params"`
		ID     uint64 `json:"id"`
	}{method, params, id}
	if err := c.write(req); err != nil {
		c.forget(id)
		return nil, fmt.Errorf("ovsdb: send %s: %w", method, err)
	}
	select {
	case r := <-ch:
		return r.result, r.err
	case <-ctx.Done():
		c.forget(id)
		return nil, fmt.Errorf("ovsdb: %s: %w", method, ctx.Err())
	}
}

func (c *Client) forget(id uint64) {
	c.mu.Lock()
	delete(c.pending, id)
	c.mu.Unlock()
}

// Transact runs ops as one atomic transaction on database db (RFC 7047
// 4.1.3) and returns one Result per operation. When an operation fails,
// or the commit does (a constraint or referential integrity violation
// found at commit), nothing is changed and the error is a *TxError; the
// results are returned with it.
func (c *Client) Transact(ctx context.Context, db string, ops ...Op) ([]Result, error) {
	params := make([]any, 0, len(ops)+1)
	params = append(params, db)
	for _, op := range ops {
		params = append(params, op)
	}
	raw, err := c.call(ctx, "transact", params)
	if err != nil {
		return nil, err
	}
	var results []Result
	if err := json.Unmarshal(raw, &results); err != nil {
		return nil, fmt.Errorf("ovsdb: transact: decode result: %w", err)
	}
	return results, txError(ops, results)
}

// txError finds the failed operation in a transaction's results: the first
// result with an error, which for one past the operations is the commit.
func txError(ops []Op, results []Result) error {
	for i, r := range results {
		if r.Error == "" {
			continue
		}
		e := &TxError{Index: i, Err: r.Error, Details: r.Details}
		if i < len(ops) {
			e.Op, e.Table = ops[i].Op, ops[i].Table
		}
		return e
	}
	if len(results) < len(ops) {
		return fmt.Errorf("ovsdb: transact: %d results for %d operations", len(results), len(ops))
	}
	return nil
}

// TxError is a failed transaction: the operation at Index (Op on Table),
// or the commit when Op is "" (Index = the number of operations).
type TxError struct {
	Index     int
	Op, Table string
	Err       string // the RFC 7047 error tag: "constraint violation", "timed out", ...
	Details   string
}

func (e *TxError) Error() string {
	where := "commit"
	if e.Op != "" {
		where = fmt.Sprintf("operation %d (%s %s)", e.Index, e.Op, e.Table)
	}
	if e.Details != "" {
		return fmt.Sprintf("ovsdb: transaction failed at %s: %s: %s", where, e.Err, e.Details)
	}
	return fmt.Sprintf("ovsdb: transaction failed at %s: %s", where, e.Err)
}

// IsTxError reports whether err is a failed transaction with that error
// tag ("constraint violation", "referential integrity violation", "timed
// out", ...).
func IsTxError(err error, tag string) bool {
	var te *TxError
	return errors.As(err, &te) && te.Err == tag
}

// Echo sends an "echo" request and checks the server returns it.
func (c *Client) Echo(ctx context.Context) error {
	raw, err := c.call(ctx, "echo", []any{"tether"})
	if err != nil {
		return err
	}
	var got []string
	if err := json.Unmarshal(raw, &got); err != nil || len(got) != 1 || got[0] != "tether" {
		return fmt.Errorf("ovsdb: echo answered %s", raw)
	}
	return nil
}
