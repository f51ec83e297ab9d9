package ovsdb

// RFC 7047 wire shapes (section 5.1): an atom is a JSON string, number or
// boolean, or ["uuid", "<uuid>"] / ["named-uuid", "<id>"]; a set is
// ["set", [atom, ...]] (a set of exactly one atom may be the bare atom);
// a map is ["map", [[key, value], ...]]. Rows are JSON objects of column
// name to value. Conditions are [column, function, value] and mutations
// [column, mutator, value].

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
)

// UUID is a row's identifier, on the wire ["uuid", "<uuid>"].
type UUID string

// MarshalJSON encodes ["uuid", u].
func (u UUID) MarshalJSON() ([]byte, error) { return json.Marshal([2]string{"uuid", string(u)}) }

// NamedUUID refers to a row inserted by an earlier "insert" operation of
// the same transaction (its uuid-name), on the wire ["named-uuid", "<id>"].
type NamedUUID string

// MarshalJSON encodes ["named-uuid", n].
func (n NamedUUID) MarshalJSON() ([]byte, error) {
	return json.Marshal([2]string{"named-uuid", string(n)})
}

// Set is an OVSDB set, on the wire ["set", [atom, ...]]. An empty Set
// clears an optional column ("tag": no VLAN).
type Set []any

// MarshalJSON encodes ["set", [...]] (never null: an empty set is []).
func (s Set) MarshalJSON() ([]byte, error) {
	elems := []any(s)
	if elems == nil {
		elems = []any{}
	}
	return json.Marshal([]any{"set", elems})
}

// Map is an OVSDB map of strings to strings (external_ids, options,
// other_config), on the wire ["map", [[key, value], ...]].
type Map map[string]string

// MarshalJSON encodes ["map", [[k, v], ...]] with keys in order, so a
// request is the same bytes every time.
func (m Map) MarshalJSON() ([]byte, error) {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	pairs := make([][2]string, 0, len(m))
	for _, k := range keys {
		pairs = append(pairs, [2]string{k, m[k]})
	}
	return json.Marshal([]any{"map", pairs})
}

// Pairs is a decoded map whose keys or values are not all strings
// (statistics: string to integer).
type Pairs [][2]any

// Row is a table row: column name to value. Values sent are Go strings,
// ints, bools, float64s, UUID, NamedUUID, Set and Map; values received are
// decoded to string, int64, float64, bool, UUID, Set, Map or Pairs.
type Row map[string]any

// UnmarshalJSON decodes each column's value (decodeValue).
func (r *Row) UnmarshalJSON(b []byte) error {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(b, &raw); err != nil {
		return err
	}
	row := make(Row, len(raw))
	for col, v := range raw {
		val, err := decodeValue(v)
		if err != nil {
			return fmt.Errorf("column %q: %w", col, err)
		}
		row[col] = val
	}
	*r = row
	return nil
}

// decodeValue turns a wire value into a Go value: an atom, a Set of atoms,
// a Map or Pairs.
func decodeValue(b json.RawMessage) (any, error) {
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	var v any
	if err := d.Decode(&v); err != nil {
		return nil, err
	}
	return convert(v, true)
}

// convert turns a generically decoded JSON value into an OVSDB value;
// compound says whether a set or map may appear (not inside one).
func convert(v any, compound bool) (any, error) {
	switch x := v.(type) {
	case string, bool:
		return x, nil
	case json.Number:
		if i, err := strconv.ParseInt(string(x), 10, 64); err == nil {
			return i, nil
		}
		return x.Float64()
	case []any:
		return convertTagged(x, compound)
	}
	return nil, fmt.Errorf("unexpected value %v", v)
}

func convertTagged(x []any, compound bool) (any, error) {
	if len(x) != 2 {
		return nil, fmt.Errorf("malformed value %v", x)
	}
	tag, _ := x[0].(string)
	switch {
	case tag == "uuid" || tag == "named-uuid":
		s, ok := x[1].(string)
		if !ok {
			return nil, fmt.Errorf("malformed %s %v", tag, x[1])
		}
		if tag == "named-uuid" {
			return NamedUUID(s), nil
		}
		return UUID(s), nil
	case tag == "set" && compound:
		elems, ok := x[1].([]any)
		if !ok {
			return nil, fmt.Errorf("malformed set %v", x[1])
		}
		set := make(Set, 0, len(elems))
		for _, e := range elems {
			a, err := convert(e, false)
			if err != nil {
				return nil, err
			}
			set = append(set, a)
		}
		return set, nil
	case tag == "map" && compound:
		return convertMap(x[1])
	}
	return nil, fmt.Errorf("malformed value %v", x)
}

func convertMap(v any) (any, error) {
	elems, ok := v.([]any)
	if !ok {
		return nil, fmt.Errorf("malformed map %v", v)
	}
	pairs := make(Pairs, 0, len(elems))
	strs := true
	for _, e := range elems {
		p, ok := e.([]any)
		if !ok || len(p) != 2 {
			return nil, fmt.Errorf("malformed map pair %v", e)
		}
		k, err := convert(p[0], false)
		if err != nil {
			return nil, err
		}
		val, err := convert(p[1], false)
		if err != nil {
			return nil, err
		}
		_, ks := k.(string)
		_, vs := val.(string)
		strs = strs && ks && vs
		pairs = append(pairs, [2]any{k, val})
	}
	if !strs {
		return pairs, nil
	}
	m := make(Map, len(pairs))
	for _, p := range pairs {
		m[p[0].(string)] = p[1].(string)
	}
	return m, nil
}

// String is a string column's value ("" when absent or not a string).
func (r Row) String(col string) string {
	s, _ := r[col].(string)
	return s
}

// UUID is a uuid column's value ("_uuid", or a reference of at most one).
func (r Row) UUID(col string) UUID {
	if u := r.UUIDs(col); len(u) > 0 {
		return u[0]
	}
	return ""
}

// UUIDs is a set-of-uuid column's members (a bare uuid is a set of one).
func (r Row) UUIDs(col string) []UUID {
	var out []UUID
	for _, a := range atoms(r[col]) {
		if u, ok := a.(UUID); ok {
			out = append(out, u)
		}
	}
	return out
}

// Int is an optional integer column's value (a set of zero or one
// integer, or a bare integer); ok is false when it is empty.
func (r Row) Int(col string) (int, bool) {
	for _, a := range atoms(r[col]) {
		if i, ok := a.(int64); ok {
			return int(i), true
		}
	}
	return 0, false
}

// Bool is a boolean column's value (false when absent).
func (r Row) Bool(col string) bool {
	for _, a := range atoms(r[col]) {
		if b, ok := a.(bool); ok {
			return b
		}
	}
	return false
}

// Map is a string map column's value (nil when absent or empty).
func (r Row) Map(col string) Map {
	m, _ := r[col].(Map)
	return m
}

// atoms is a value's members: a Set's elements, or the value itself.
func atoms(v any) []any {
	switch x := v.(type) {
	case nil:
		return nil
	case Set:
		return x
	}
	return []any{v}
}

// Condition is a "where" clause term, on the wire [column, function,
// value]; function is one of <, <=, ==, !=, >=, >, includes, excludes.
type Condition struct {
	Column, Function string
	Value            any
}

// Cond builds a Condition.
func Cond(column, function string, value any) Condition {
	return Condition{Column: column, Function: function, Value: value}
}

// MarshalJSON encodes [column, function, value].
func (c Condition) MarshalJSON() ([]byte, error) {
	return json.Marshal([]any{c.Column, c.Function, c.Value})
}

// Mutation is a "mutate" term, on the wire [column, mutator, value];
// mutator is one of +=, -=, *=, /=, %=, insert, delete.
type Mutation struct {
	Column, Mutator string
	Value           any
}

// Mut builds a Mutation.
func Mut(column, mutator string, value any) Mutation {
	return Mutation{Column: column, Mutator: mutator, Value: value}
}

// MarshalJSON encodes [column, mutator, value].
func (m Mutation) MarshalJSON() ([]byte, error) {
	return json.Marshal([]any{m.Column, m.Mutator, m.Value})
}

// Op is one operation of a transaction (RFC 7047 section 5.2). Build it
// with Insert, Update, Mutate, Delete, Select or Wait.
type Op struct {
	Op        string
	Table     string
	Row       Row
	Rows      []Row // wait
	Where     []Condition
	Columns   []string // select, wait
	Mutations []Mutation
	UUIDName  string // insert: the name later operations refer to as NamedUUID
	Until     string // wait: "==" or "!="
	Timeout   int    // wait, milliseconds
}

// Insert adds row to table; uuidName ("" for none) lets later operations
// of the transaction refer to it as NamedUUID(uuidName).
func Insert(table string, row Row, uuidName string) Op {
	return Op{Op: "insert", Table: table, Row: row, UUIDName: uuidName}
}

// Update sets the columns of row in the rows matching where.
func Update(table string, row Row, where ...Condition) Op {
	return Op{Op: "update", Table: table, Row: row, Where: where}
}

// Mutate changes columns of the rows matching where in place (set insert
// and delete, arithmetic).
func Mutate(table string, muts []Mutation, where ...Condition) Op {
	return Op{Op: "mutate", Table: table, Mutations: muts, Where: where}
}

// Delete removes the rows matching where.
func Delete(table string, where ...Condition) Op {
	return Op{Op: "delete", Table: table, Where: where}
}

// Select reads the columns (nil: all) of the rows matching where.
func Select(table string, columns []string, where ...Condition) Op {
	return Op{Op: "select", Table: table, Columns: columns, Where: where}
}

// Wait aborts the transaction unless the columns of the rows matching
// where compare (until "==" or "!=") to rows within timeout milliseconds
// (0: at once). A guard: "only if nothing changed since I read it".
func Wait(table string, where []Condition, columns []string, until string, rows []Row, timeout int) Op {
	return Op{Op: "wait", Table: table, Where: where, Columns: columns, Until: until, Rows: rows, Timeout: timeout}
}

// MarshalJSON encodes the members the operation takes. "where" is always
// sent for the operations that require it (an empty one matches every row).
func (o Op) MarshalJSON() ([]byte, error) {
	m := map[string]any{"op": o.Op, "table": o.Table}
	switch o.Op {
	case "insert":
		m["row"] = nonNilRow(o.Row)
		if o.UUIDName != "" {
			m["uuid-name"] = o.UUIDName
		}
	case "update":
		m["row"], m["where"] = nonNilRow(o.Row), nonNil(o.Where)
	case "mutate":
		m["mutations"], m["where"] = nonNil(o.Mutations), nonNil(o.Where)
	case "delete":
		m["where"] = nonNil(o.Where)
	case "select":
		m["where"] = nonNil(o.Where)
		if o.Columns != nil {
			m["columns"] = o.Columns
		}
	case "wait":
		m["where"], m["until"], m["rows"], m["timeout"] = nonNil(o.Where), o.Until, nonNil(o.Rows), o.Timeout
		if o.Columns != nil {
			m["columns"] = o.Columns
		}
	default:
		return nil, fmt.Errorf("unknown operation %q", o.Op)
	}
	return json.Marshal(m)
}

func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

func nonNilRow(r Row) Row {
	if r == nil {
		return Row{}
	}
	return r
}

// Result is one operation's outcome (RFC 7047 section 5.2): UUID for an
// insert, Count for update, mutate and delete, Rows for select. Error and
// Details are set for the operation that failed; the ones after it were
// not run (zero Results).
type Result struct {
	UUID    UUID
	Count   int
	Rows    []Row
	Error   string
	Details string
}

// UnmarshalJSON decodes a result object (null: an operation not run).
func (r *Result) UnmarshalJSON(b []byte) error {
	if string(bytes.TrimSpace(b)) == "null" {
		*r = Result{}
		return nil
	}
	var raw struct {
		UUID    json.RawMessage `json:"uuid"`
		Count   int             `json:"count"`
		Rows    []Row           `json:"rows"`
		Error   string          `json:"error"`
		Details string          `json:"details"`
	}
	if err := json.Unmarshal(b, &raw); err != nil {
		return err
	}
	*r = Result{Count: raw.Count, Rows: raw.Rows, Error: raw.Error, Details: raw.Details}
	if len(raw.UUID) > 0 {
		v, err := decodeValue(raw.UUID)
		if err != nil {
			return fmt.Errorf("uuid: %w", err)
		}
		u, ok := v.(UUID)
		if !ok {
			return fmt.Errorf("uuid: not a uuid: %s", raw.UUID)
		}
		r.UUID = u
	}
	return nil
}
