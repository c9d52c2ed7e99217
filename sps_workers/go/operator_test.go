package main

// The operator's dead-letter reasons and detail strings, with the noop backend (no broker, no
// ONNX Runtime). The same strings are checked against the Python operator record by record in
// tests/integration/sps_workers/test_go.py.

import (
	"encoding/json"
	"strings"
	"testing"

	pb "crayfish/go-worker/pb"
	"google.golang.org/protobuf/proto"
)

func ffnnSpec() *modelSpec {
	return &modelSpec{Name: "ffnn",
		Inputs:  []tensorSpec{{Name: "input_1", DType: "float32", Code: 1, Shape: []int64{1, 784}}},
		Outputs: []tensorSpec{{Name: "output", DType: "float32", Code: 1, Shape: []int64{10}}}}
}

func maskedSpec() *modelSpec {
	return &modelSpec{Name: "masked",
		Inputs: []tensorSpec{{Name: "features", DType: "float32", Code: 1, Shape: []int64{6}},
			{Name: "mask", DType: "int64", Code: 7, Shape: []int64{6}}},
		Outputs: []tensorSpec{{Name: "scores", DType: "float32", Code: 1, Shape: []int64{3}},
			{Name: "label", DType: "int64", Code: 7, Shape: []int64{}}}}
}

func noopOperator(spec *modelSpec) *operator {
	return newOperator(spec, "go-0", &zeros{label: "noop", spec: spec}, nil, nil)
}

func tensor(code pb.DType, shape ...int64) *pb.Tensor {
	n := int64(1)
	for _, d := range shape {
		n *= d
	}
	return &pb.Tensor{Dtype: code, Shape: shape, Data: make([]byte, n*itemSize(int32(code)))}
}

func encode(t *testing.T, b *pb.DataBatch) []byte {
	t.Helper()
	v, err := proto.Marshal(b)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func deadLetter(t *testing.T, r result) *pb.DeadLetter {
	t.Helper()
	if r.DeadLetter == nil {
		t.Fatalf("scored, expected a dead letter")
	}
	d := &pb.DeadLetter{}
	if err := proto.Unmarshal(r.DeadLetter, d); err != nil {
		t.Fatal(err)
	}
	return d
}

func TestSingleTensorReasonsAndDetails(t *testing.T) {
	op := noopOperator(ffnnSpec())
	short := tensor(pb.DType_DTYPE_FLOAT32, 1, 1, 784)
	short.Data = short.Data[:len(short.Data)-3]
	neg := tensor(pb.DType_DTYPE_FLOAT32, 1, 784)
	neg.Shape = []int64{1, -784}
	cases := []struct {
		name, reason, detail string
		batch                *pb.DataBatch
	}{
		{"short data", reasonDecodeError, "tensor data has 3133 bytes, shape (1, 1, 784) of float32 needs 3136",
			&pb.DataBatch{BatchId: "a", Input: short}},
		{"unknown dtype", reasonDecodeError, "unknown tensor dtype code 99",
			&pb.DataBatch{BatchId: "b", Input: &pb.Tensor{Dtype: 99, Shape: []int64{1}}}},
		{"negative dim", reasonDecodeError, "negative dimension in shape (1, -784)",
			&pb.DataBatch{BatchId: "c", Input: neg}},
		{"bad shape", reasonBadShape, "expected shape [batch, 1, 784], got [3, 784]",
			&pb.DataBatch{BatchId: "d", Input: tensor(pb.DType_DTYPE_FLOAT32, 3, 784)}},
		{"bad dtype", reasonBadDType, "expected float32 input, got int32",
			&pb.DataBatch{BatchId: "e", Input: tensor(pb.DType_DTYPE_INT32, 1, 1, 784)}},
		{"unknown model", reasonUnknownModel, "model 'resnet50' is not served here (serving 'ffnn')",
			&pb.DataBatch{BatchId: "f", Model: "resnet50", Input: tensor(pb.DType_DTYPE_FLOAT32, 1, 1, 784)}},
	}
	for _, c := range cases {
		value := encode(t, c.batch)
		d := deadLetter(t, op.process(value, 1234, "in", 1, 7))
		if d.Reason != c.reason || d.Detail != c.detail || d.Facts.Error != c.detail {
			t.Errorf("%s: got %s %q, want %s %q", c.name, d.Reason, d.Detail, c.reason, c.detail)
		}
		if d.SourceTopic != "in" || d.SourcePartition != 1 || d.SourceOffset != 7 || d.InputAppendMs != 1234 ||
			string(d.Payload) != string(value) || d.Facts.Engine != "go" || d.Facts.WorkerId != "go-0" {
			t.Errorf("%s: source, payload or facts wrong: %v", c.name, d)
		}
		// batch_id is known once the batch decoded (not for a tensor that fails from_tensor's checks).
		if want := map[bool]string{true: "", false: c.batch.BatchId}[c.reason == reasonDecodeError]; d.BatchId != want {
			t.Errorf("%s: batch_id %q, want %q", c.name, d.BatchId, want)
		}
	}
	d := deadLetter(t, op.process([]byte("\xff\x00 this is not protobuf"), 1, "in", 0, 0))
	if d.Reason != reasonDecodeError || !strings.HasPrefix(d.Detail, "not a crayfish.v1.DataBatch: ") {
		t.Errorf("garbage: %s %q", d.Reason, d.Detail)
	}
}

func TestScoredBatchCarriesTheBatchAndTheStamps(t *testing.T) {
	op := noopOperator(ffnnSpec())
	in := &pb.DataBatch{RunId: "r", Sequence: 7, IntendedNs: 5, CreatedNs: 6, Attributes: map[string]string{"k": "v"},
		Input: tensor(pb.DType_DTYPE_FLOAT32, 2, 1, 784)}
	r := op.process(encode(t, in), 99, "in", 0, 12)
	s := &pb.ScoredBatch{}
	if r.Value == nil || proto.Unmarshal(r.Value, s) != nil {
		t.Fatalf("not scored: %s", r.Reason)
	}
	if s.BatchId != "in/0/12" || s.Model != "ffnn" || s.RunId != "r" || s.Sequence != 7 || s.InputAppendMs != 99 ||
		s.Attributes["k"] != "v" || len(s.Outputs) != 0 {
		t.Errorf("fields not carried over: %v", s)
	}
	if got := s.Output.GetShape(); len(got) != 2 || got[0] != 2 || got[1] != 10 {
		t.Errorf("output shape %v", got)
	}
	f := s.Facts
	if f.Engine != "go" || f.Backend != "noop" || f.WorkerReceiveNs <= 0 || f.WorkerSendNs < f.WorkerReceiveNs {
		t.Errorf("facts %v", f)
	}
	// A one-input model's tensor sent by name comes back by the output's name.
	named := &pb.DataBatch{BatchId: "n", Inputs: map[string]*pb.Tensor{"input_1": tensor(pb.DType_DTYPE_FLOAT32, 1, 1, 784)}}
	s = &pb.ScoredBatch{}
	if r := op.process(encode(t, named), 1, "in", 0, 0); r.Value == nil || proto.Unmarshal(r.Value, s) != nil {
		t.Fatalf("named batch not scored: %s", r.Reason)
	}
	if s.Output != nil || s.Outputs["output"] == nil {
		t.Errorf("named one-output batch: %v", s)
	}
}

func TestNamedTensorsAreCheckedAsCheckFeeds(t *testing.T) {
	op := noopOperator(maskedSpec())
	x, mask := tensor(pb.DType_DTYPE_FLOAT32, 4, 6), tensor(pb.DType_DTYPE_INT64, 4, 6)
	cases := []struct {
		name, reason, detail string
		inputs               map[string]*pb.Tensor
		input                *pb.Tensor
	}{
		{"missing", reasonBadShape, "masked: inputs ['features'] do not match the model's ['features', 'mask'] " +
			"(missing mask)", map[string]*pb.Tensor{"features": x}, nil},
		{"unknown", reasonBadShape, "masked: inputs ['extra', 'features', 'mask'] do not match the model's " +
			"['features', 'mask'] (unknown extra)", map[string]*pb.Tensor{"features": x, "mask": mask, "extra": mask}, nil},
		{"dtype", reasonBadDType, "masked: input mask: expected int64 [b>=1, 6], got int32 [4, 6]",
			map[string]*pb.Tensor{"features": x, "mask": tensor(pb.DType_DTYPE_INT32, 4, 6)}, nil},
		{"rows", reasonBadShape, "masked: input mask has 3 rows, features has 4: every input shares the batch axis",
			map[string]*pb.Tensor{"features": x, "mask": tensor(pb.DType_DTYPE_INT64, 3, 6)}, nil},
		{"unnamed", reasonBadShape, "masked: takes named inputs features, mask, got one unnamed tensor", nil, x},
	}
	for _, c := range cases {
		d := deadLetter(t, op.process(encode(t, &pb.DataBatch{BatchId: c.name, Inputs: c.inputs, Input: c.input}),
			1, "in", 0, 0))
		if d.Reason != c.reason || d.Detail != c.detail {
			t.Errorf("%s: got %s %q\nwant %s %q", c.name, d.Reason, d.Detail, c.reason, c.detail)
		}
	}
	s := &pb.ScoredBatch{}
	r := op.process(encode(t, &pb.DataBatch{BatchId: "ok", Inputs: map[string]*pb.Tensor{"features": x, "mask": mask}}),
		1, "in", 0, 0)
	if r.Value == nil || proto.Unmarshal(r.Value, s) != nil {
		t.Fatalf("good named batch not scored: %s", r.Reason)
	}
	if s.Outputs["label"].GetDtype() != pb.DType_DTYPE_INT64 || len(s.Outputs["label"].Shape) != 1 ||
		s.Outputs["scores"].Shape[1] != 3 {
		t.Errorf("outputs %v", s.Outputs)
	}
}

func TestManifestAndPythonText(t *testing.T) {
	var m map[string]json.RawMessage
	_ = json.Unmarshal([]byte(`{"name": "ffnn", "input_name": "input_1", "output_name": "output",
		"input_shape": ["batch", 1, 784], "input_dtype": "float32", "output_shape": ["batch", 10]}`), &m)
	spec, err := specFromManifest("ffnn", m, "manifest.json")
	if err != nil || spec.Inputs[0].want() != "float32 [b>=1, 1, 784]" || spec.Outputs[0].Shape[0] != 10 {
		t.Errorf("spec %v, %v", spec, err)
	}
	if _, err := specFromManifest("other", m, "manifest.json"); err == nil ||
		err.Error() != "model: manifest.json describes model 'ffnn', not 'other'" {
		t.Errorf("wrong name: %v", err)
	}
	for in, want := range map[string]string{"gpt": "'gpt'", "it's": `"it's"`, "a\nb": `'a\nb'`, "\x01": `'\x01'`} {
		if got := pyRepr(in); got != want {
			t.Errorf("pyRepr(%q) = %s, want %s", in, got, want)
		}
	}
	if pyTuple([]int64{5}) != "(5,)" || pyTuple(nil) != "()" || pyList([]int64{1, 2}) != "[1, 2]" {
		t.Error("pyTuple / pyList")
	}
	if !sampledTraceparent("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01") ||
		sampledTraceparent("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00") {
		t.Error("sampledTraceparent")
	}
}
