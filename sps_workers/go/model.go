package main

// What a model takes and returns per item (serving/models/spec.py), read from the built model's
// <models_dir>/<model>/manifest.json, as the Java worker's ModelSpec does: a model added to the
// Python registry (or imported from a file) needs nothing here.

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	pb "crayfish/go-worker/pb"
)

// tensorSpec is one tensor per item: name, numpy dtype name and its DType code, shape without the
// batch axis.
type tensorSpec struct {
	Name  string
	DType string
	Code  int32
	Shape []int64
}

// want is "int64 [b>=1, 6]", as check_feeds writes what it expected.
func (t tensorSpec) want() string { return t.DType + " [b>=1, " + pyList(t.Shape)[1:] }

// modelSpec lists every input and output in the model's order.
type modelSpec struct {
	Name    string
	Inputs  []tensorSpec
	Outputs []tensorSpec
}

func (m *modelSpec) inputNames() []string {
	names := make([]string, len(m.Inputs))
	for i, t := range m.Inputs {
		names[i] = t.Name
	}
	return names
}

// simple: one float32 input, checked inline (scoring_op's _simple).
func (m *modelSpec) simple() bool {
	return len(m.Inputs) == 1 && m.Inputs[0].Code == int32(pb.DType_DTYPE_FLOAT32)
}

// loadModelSpec reads <root>/<name>/manifest.json; a configError names what is missing.
func loadModelSpec(root, name string) (*modelSpec, error) {
	path := filepath.Join(root, name, "manifest.json")
	raw, err := os.ReadFile(path)
	if os.IsNotExist(err) {
		return nil, configErrorf("model: %s is not built in %s (no %s); run `python -m serving.models build "+
			"--model %s --dir %s`", pyRepr(name), root, path, name, root)
	} else if err != nil {
		return nil, configErrorf("model: cannot read %s: %v", path, err)
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, configErrorf("model: %s is not a JSON object", path)
	}
	return specFromManifest(name, m, path)
}

// specFromManifest: the lists inputs / outputs of {name, dtype, shape}, else the single fields
// (input_name, input_dtype, input_shape, output_name, output_shape; float32 output); shapes with
// the batch axis first, named "batch".
func specFromManifest(name string, m map[string]json.RawMessage, where string) (*modelSpec, error) {
	got, err := text(m, "name", where)
	if err != nil {
		return nil, err
	}
	if got != name {
		return nil, configErrorf("model: %s describes model %s, not %s", where, pyRepr(got), pyRepr(name))
	}
	spec := &modelSpec{Name: name}
	if spec.Inputs, err = tensorList(m, "inputs", where); err != nil {
		return nil, err
	}
	if len(spec.Inputs) == 0 {
		t, err := singleTensor(m, "input_name", "input_dtype", "input_shape", where)
		if err != nil {
			return nil, err
		}
		spec.Inputs = []tensorSpec{t}
	}
	if spec.Outputs, err = tensorList(m, "outputs", where); err != nil {
		return nil, err
	}
	if len(spec.Outputs) == 0 {
		t, err := singleTensor(m, "output_name", "", "output_shape", where)
		if err != nil {
			return nil, err
		}
		spec.Outputs = []tensorSpec{t}
	}
	return spec, nil
}

func singleTensor(m map[string]json.RawMessage, nameField, dtypeField, shapeField, where string) (tensorSpec, error) {
	n, err := text(m, nameField, where)
	if err != nil {
		return tensorSpec{}, err
	}
	dtype := "float32"
	if dtypeField != "" {
		if dtype, err = text(m, dtypeField, where); err != nil {
			return tensorSpec{}, err
		}
	} else {
		dtypeField = nameField
	}
	return newTensorSpec(n, dtype, m[shapeField], shapeField, dtypeField, where)
}

func tensorList(m map[string]json.RawMessage, field, where string) ([]tensorSpec, error) {
	raw, ok := m[field]
	if !ok || string(raw) == "null" {
		return nil, nil
	}
	var items []map[string]json.RawMessage
	if err := json.Unmarshal(raw, &items); err != nil {
		return nil, configErrorf("model: %s: %s must be a list of {name, dtype, shape}", where, field)
	}
	out := make([]tensorSpec, 0, len(items))
	for i, t := range items {
		in := fmt.Sprintf("%s: %s[%d]", where, field, i)
		n, err := text(t, "name", in)
		if err != nil {
			return nil, err
		}
		dtype, err := text(t, "dtype", in)
		if err != nil {
			return nil, err
		}
		ts, err := newTensorSpec(n, dtype, t["shape"], "shape", "dtype", in)
		if err != nil {
			return nil, err
		}
		out = append(out, ts)
	}
	return out, nil
}

func newTensorSpec(name, dtype string, shape json.RawMessage, shapeField, dtypeField, where string) (tensorSpec, error) {
	code := dtypeCode(dtype)
	if code < 0 {
		return tensorSpec{}, configErrorf("model: %s: %s: tensor %s has dtype %s; the %s engine takes %s", where,
			dtypeField, pyRepr(name), pyRepr(dtype), engineName, strings.Join(dtypeNames, ", "))
	}
	// ["batch", d1, d2, ...] -> [d1, d2, ...]
	var dims []any
	bad := configErrorf("model: %s: %s must be [\"batch\", d1, ...]", where, shapeField)
	if err := json.Unmarshal(shape, &dims); err != nil || len(dims) < 1 {
		return tensorSpec{}, bad
	}
	if _, ok := dims[0].(string); !ok {
		return tensorSpec{}, bad
	}
	item := make([]int64, 0, len(dims)-1)
	for i, d := range dims[1:] {
		f, ok := d.(float64)
		if !ok || f < 1 || f != float64(int64(f)) {
			return tensorSpec{}, configErrorf("model: %s: %s[%d] must be a positive integer, got %v", where,
				shapeField, i+1, d)
		}
		item = append(item, int64(f))
	}
	return tensorSpec{Name: name, DType: dtype, Code: code, Shape: item}, nil
}

func text(m map[string]json.RawMessage, field, where string) (string, error) {
	var s string
	if err := json.Unmarshal(m[field], &s); err != nil || s == "" {
		return "", configErrorf("model: %s: %s missing or not a string", where, field)
	}
	return s, nil
}
