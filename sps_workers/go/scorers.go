package main

// The embedded backends of serving/embedded for Go: onnxruntime (onnx.go), noop, sleep.

import (
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	pb "crayfish/go-worker/pb"
)

var backends = []string{"onnxruntime", "noop", "sleep"}

// newScorer builds the backend named in settings. Extension point: a new backend is one case here
// and its name in backends (and in sps_workers/go/__main__.py's BACKENDS, which refuses the others
// before the build).
func newScorer(s *settings, spec *modelSpec) (scorer, error) {
	switch s.Backend {
	case "onnxruntime":
		return newOnnxScorer(s, spec)
	case "noop":
		if _, err := newBackendOptions("noop", s.BackendOptions, nil); err != nil {
			return nil, err
		}
		return &zeros{label: "noop", spec: spec}, nil
	case "sleep":
		o, err := newBackendOptions("sleep", s.BackendOptions, []string{"delay_ms", "spin_us"})
		if err != nil {
			return nil, err
		}
		delayMs, err := o.number("delay_ms", nil)
		if err != nil {
			return nil, err
		}
		spin := 1000.0
		spinUs, err := o.number("spin_us", &spin)
		if err != nil {
			return nil, err
		}
		return &zeros{label: "sleep", spec: spec, delay: time.Duration(delayMs * 1e6),
			spin: time.Duration(spinUs * 1e3)}, nil
	default:
		return nil, configErrorf("backend: %s is not available in the %s engine; known: %s", pyRepr(s.Backend),
			engineName, strings.Join(backends, ", "))
	}
}

// zeros is noop (zeros at once) and sleep (a fixed delay, then zeros): calibration backends.
type zeros struct {
	label       string
	spec        *modelSpec
	delay, spin time.Duration
}

func (z *zeros) name() string { return z.label }
func (z *zeros) close()       {}

func (z *zeros) score(_ map[string]*pb.Tensor, rows int64) (map[string]*pb.Tensor, error) {
	if z.delay > 0 {
		deadline := time.Now().Add(z.delay)
		if coarse := z.delay - z.spin; coarse > 0 {
			time.Sleep(coarse)
		}
		for time.Now().Before(deadline) { // spin the last spin_us: sleeps overshoot
		}
	}
	out := make(map[string]*pb.Tensor, len(z.spec.Outputs))
	for _, t := range z.spec.Outputs {
		out[t.Name] = zerosTensor(t.Code, rows, t.Shape)
	}
	return out, nil
}

// backendOptions is serving.embedded.base.Scorer.resolve_options: unknown names and bad values
// fail naming the option.
type backendOptions struct {
	backend string
	given   map[string]json.RawMessage
}

func newBackendOptions(backend string, given map[string]json.RawMessage, known []string) (*backendOptions, error) {
	var unknown []string
	for k := range given {
		found := false
		for _, n := range known {
			found = found || n == k
		}
		if !found {
			unknown = append(unknown, k)
		}
	}
	if len(unknown) > 0 {
		sort.Strings(unknown)
		q := make([]string, len(unknown))
		for i, k := range unknown {
			q[i] = pyRepr(k)
		}
		k := "none"
		if len(known) > 0 {
			sorted := append([]string(nil), known...)
			sort.Strings(sorted)
			k = strings.Join(sorted, ", ")
		}
		return nil, configErrorf("backend_options: backend %s has no option %s; its options: %s", pyRepr(backend),
			strings.Join(q, ", "), k)
	}
	return &backendOptions{backend, given}, nil
}

func (o *backendOptions) prefix(name string) string {
	return fmt.Sprintf("backend_options: backend %s: option %s", pyRepr(o.backend), pyRepr(name))
}

// number reads a non-negative number (or a string of one); dflt nil = required.
func (o *backendOptions) number(name string, dflt *float64) (float64, error) {
	raw, ok := o.given[name]
	if !ok || string(raw) == "null" {
		if dflt == nil {
			return 0, configErrorf("%s is required", o.prefix(name))
		}
		return *dflt, nil
	}
	var x float64
	if err := json.Unmarshal(raw, &x); err != nil {
		var s string
		if json.Unmarshal(raw, &s) != nil {
			return 0, configErrorf("%s: not a float: %s", o.prefix(name), raw)
		}
		if x, err = strconv.ParseFloat(strings.TrimSpace(s), 64); err != nil {
			return 0, configErrorf("%s: not a float: %s", o.prefix(name), raw)
		}
	}
	if x < 0 {
		return 0, configErrorf("%s must be >= 0, got %v", o.prefix(name), x)
	}
	return x, nil
}

// integer reads a non-negative integer (an integral float or a string of one too).
func (o *backendOptions) integer(name string, dflt int64) (int64, error) {
	d := float64(dflt)
	x, err := o.number(name, &d)
	if err != nil {
		return 0, err
	}
	if x != float64(int64(x)) {
		return 0, configErrorf("%s: not an integer: %s", o.prefix(name), o.given[name])
	}
	return int64(x), nil
}

// choice reads a string among choices (nil: any).
func (o *backendOptions) choice(name, dflt string, choices []string) (string, error) {
	x := dflt
	if raw, ok := o.given[name]; ok && string(raw) != "null" {
		if json.Unmarshal(raw, &x) != nil {
			x = string(raw)
		}
	}
	if choices != nil && !contains(choices, x) {
		q := make([]string, len(choices))
		for i, c := range choices {
			q[i] = pyRepr(c)
		}
		return "", configErrorf("%s must be one of %s, got %s", o.prefix(name), strings.Join(q, ", "), pyRepr(x))
	}
	return x, nil
}

func contains(xs []string, x string) bool {
	for _, y := range xs {
		if x == y {
			return true
		}
	}
	return false
}
