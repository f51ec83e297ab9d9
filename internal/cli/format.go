package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"text/template"
)

// formatter prints objects as a table (the default), as JSON (--format json)
// or through a Go template (--format '{{.Name}}'), like docker's --format.
type formatter struct {
	spec string
	out  io.Writer
}

func newFormatter(spec string) *formatter { return &formatter{spec: spec, out: os.Stdout} }

var funcs = template.FuncMap{
	"json": func(v any) (string, error) {
		b, err := json.Marshal(v)
		return string(b), err
	},
	"join":  strings.Join,
	"upper": strings.ToUpper,
	"lower": strings.ToLower,
}

// each prints every item through the template or as one JSON line; it
// returns false when the caller should print its table instead.
func (f *formatter) each(items []any) (bool, error) {
	switch f.spec {
	case "", "table":
		return false, nil
	case "json":
		for _, it := range items {
			b, err := json.Marshal(it)
			if err != nil {
				return true, err
			}
			fmt.Fprintln(f.out, string(b))
		}
		return true, nil
	}
	t, err := template.New("format").Funcs(funcs).Parse(strings.TrimPrefix(f.spec, "table "))
	if err != nil {
		return true, fmt.Errorf("invalid --format template: %w", err)
	}
	for _, it := range items {
		if err := t.Execute(f.out, it); err != nil {
			return true, fmt.Errorf("--format: %w", err)
		}
		fmt.Fprintln(f.out)
	}
	return true, nil
}

// inspect prints objects as docker inspect does: the daemon's JSON in an
// indented array with its field order kept, or the template applied to each.
func (f *formatter) inspect(raws []json.RawMessage) error {
	if f.spec == "" || f.spec == "json" {
		if raws == nil {
			raws = []json.RawMessage{}
		}
		b, err := json.MarshalIndent(raws, "", "    ")
		if err != nil {
			return err
		}
		fmt.Fprintln(f.out, string(b))
		return nil
	}
	items := make([]any, len(raws))
	for i, r := range raws {
		var m map[string]any
		if err := json.Unmarshal(r, &m); err != nil {
			return err
		}
		items[i] = m
	}
	_, err := f.each(items)
	return err
}

func table(header string) *tabwriter.Writer {
	w := tabwriter.NewWriter(os.Stdout, 0, 0, 3, ' ', 0)
	fmt.Fprintln(w, header)
	return w
}

// toAny converts a JSON-decoded list of objects into generic maps so
// templates see Docker's field names ({{.Name}}, {{.IPAM.Config}}).
func toAny[T any](xs []T) []any {
	out := make([]any, len(xs))
	for i, x := range xs {
		b, _ := json.Marshal(x)
		var m map[string]any
		_ = json.Unmarshal(b, &m)
		out[i] = m
	}
	return out
}
