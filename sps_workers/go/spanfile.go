package main

// The span files of observability.spanlog for Go: one JSON object per finished span, one a line,
// in <dir>/<service>-<pid>.jsonl, with exactly the fields of a span line (trace_id, span_id,
// parent_id, name, kind, start_ns, end_ns, status, attributes, links, service), which
// observability.hops.read_spans reads.

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"unicode"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
)

type spanFile struct {
	mu      sync.Mutex
	path    string
	service string
	f       *os.File
	w       *bufio.Writer
}

func newSpanFile(dir, service string) *spanFile {
	return &spanFile{path: filepath.Join(dir, fmt.Sprintf("%s-%d.jsonl", safeName(service), os.Getpid())),
		service: service}
}

// safeName keeps letters, digits, '-', '_' and '.', as the Python and Java span files do.
func safeName(name string) string {
	s := strings.Map(func(r rune) rune {
		if unicode.IsLetter(r) || unicode.IsDigit(r) || r == '-' || r == '_' || r == '.' {
			return r
		}
		return '_'
	}, name)
	if s == "" {
		return "service"
	}
	return s
}

// spanLine is one line; the field order is the span-file format's.
type spanLine struct {
	TraceID    string              `json:"trace_id"`
	SpanID     string              `json:"span_id"`
	ParentID   *string             `json:"parent_id"`
	Name       string              `json:"name"`
	Kind       string              `json:"kind"`
	StartNs    int64               `json:"start_ns"`
	EndNs      int64               `json:"end_ns"`
	Status     string              `json:"status"`
	Attributes map[string]any      `json:"attributes"`
	Links      []map[string]string `json:"links"`
	Service    string              `json:"service"`
}

func toLine(s sdktrace.ReadOnlySpan, service string) spanLine {
	l := spanLine{TraceID: s.SpanContext().TraceID().String(), SpanID: s.SpanContext().SpanID().String(),
		Name: s.Name(), Kind: strings.ToUpper(s.SpanKind().String()), StartNs: s.StartTime().UnixNano(),
		EndNs: s.EndTime().UnixNano(), Status: strings.ToUpper(s.Status().Code.String()),
		Attributes: map[string]any{}, Links: []map[string]string{}, Service: service}
	if p := s.Parent(); p.IsValid() {
		id := p.SpanID().String()
		l.ParentID = &id
	}
	for _, kv := range s.Attributes() {
		l.Attributes[string(kv.Key)] = kv.Value.AsInterface()
	}
	for _, link := range s.Links() {
		l.Links = append(l.Links, map[string]string{"trace_id": link.SpanContext.TraceID().String(),
			"span_id": link.SpanContext.SpanID().String()})
	}
	return l
}

func (e *spanFile) ExportSpans(_ context.Context, spans []sdktrace.ReadOnlySpan) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.f == nil {
		if err := os.MkdirAll(filepath.Dir(e.path), 0o755); err != nil {
			return err
		}
		f, err := os.OpenFile(e.path, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
		if err != nil {
			return err
		}
		e.f, e.w = f, bufio.NewWriter(f)
	}
	enc := json.NewEncoder(e.w) // one object and a newline per span
	enc.SetEscapeHTML(false)
	for _, s := range spans {
		if err := enc.Encode(toLine(s, e.service)); err != nil {
			return err
		}
	}
	return e.w.Flush()
}

func (e *spanFile) Shutdown(context.Context) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.f == nil {
		return nil
	}
	err := e.w.Flush()
	if cerr := e.f.Close(); err == nil {
		err = cerr
	}
	e.f = nil
	return err
}
