package main

// sps_workers/scoring_op.py for Go: decode -> validate -> score -> encode, with the same
// ScoringFacts stamps, the same dead-letter reasons and the same detail strings. One per worker
// instance (goroutine); not safe for concurrent use. A batch carries the model's only input
// (DataBatch.input) or one tensor per input name (DataBatch.inputs, checked as
// serving.models.spec.check_feeds).

import (
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	pb "crayfish/go-worker/pb"
	"google.golang.org/protobuf/proto"
)

const (
	reasonDecodeError  = "decode_error"
	reasonBadShape     = "bad_shape"
	reasonBadDType     = "bad_dtype"
	reasonUnknownModel = "unknown_model"
	reasonScoringError = "scoring_error"
	detailMax          = 2000
)

// timing is what the hop spans of a sampled batch are recorded from.
type timing struct {
	BatchID                                     string
	ReceivedNs, DecodeNs, InferenceNs, EncodeNs int64
	SendNs                                      int64
}

// result is either Value (output topic) or DeadLetter (dead-letter topic, with Reason).
type result struct {
	Value, DeadLetter []byte
	Reason            string
	Timing            *timing
}

// scorer is an embedded backend (serving/embedded) fed tensors the operator has validated: one
// per input name, sharing the batch axis; it answers one tensor per output name of the model.
// Extension point: a new backend is one scorer plus one case in newScorer (scorers.go).
type scorer interface {
	name() string
	score(feeds map[string]*pb.Tensor, rows int64) (map[string]*pb.Tensor, error)
	close()
}

// answer is what a model server said: outputs by name (or the one output), plus its own stamps.
type answer struct {
	Output                         *pb.Tensor
	Outputs                        map[string]*pb.Tensor
	ServerInferenceNs, ServerQueue int64
	Server                         string
}

type operator struct {
	spec     *modelSpec
	workerID string
	backend  string
	scorer   scorer         // embedded, or
	client   *scoringClient // external
	retries  int
	backoffS float64
	oneName  string // the input name of a one-input model ("" otherwise)
}

func wallNs() int64 { return time.Now().UnixNano() }

// feedError is a batch whose inputs do not fit the model; reason is bad_shape or bad_dtype.
type feedError struct{ reason, msg string }

func (e *feedError) Error() string { return e.msg }

func newOperator(spec *modelSpec, workerID string, sc scorer, client *scoringClient, ext *external) *operator {
	op := &operator{spec: spec, workerID: workerID, scorer: sc, client: client}
	if len(spec.Inputs) == 1 {
		op.oneName = spec.Inputs[0].Name
	}
	if client != nil {
		op.backend, op.retries, op.backoffS = "scoring", ext.Retries, ext.BackoffS
	} else {
		op.backend = sc.name()
	}
	return op
}

// process scores one record: value is the DataBatch bytes, appendMs its broker timestamp.
func (op *operator) process(value []byte, appendMs int64, topic string, partition int32, offset int64) result {
	received := wallNs()
	t0 := time.Now()
	batch := &pb.DataBatch{}
	if err := proto.Unmarshal(value, batch); err != nil {
		return op.dead(reasonDecodeError, "not a crayfish.v1.DataBatch: "+err.Error(), value, nil, topic, partition,
			offset, appendMs, received)
	}
	// As the Python operator: a batch with named inputs is read by them; a one-input model's tensor
	// sent under its name is then checked as a single tensor (one map lookup).
	named := len(batch.Inputs) > 0
	var x *pb.Tensor
	var shape []int64
	shapes := map[string][]int64{}
	var err error
	if named && !(op.oneName != "" && len(batch.Inputs) == 1 && batch.Inputs[op.oneName] != nil) {
		for _, k := range sortedKeys(batch.Inputs) {
			if shapes[k], err = checkTensor(batch.Inputs[k]); err != nil {
				break
			}
		}
	} else {
		x = batch.Input
		if named {
			x = batch.Inputs[op.oneName]
		}
		shape, err = checkTensor(x)
	}
	if err != nil {
		return op.dead(reasonDecodeError, err.Error(), value, nil, topic, partition, offset, appendMs, received)
	}
	if batch.BatchId == "" {
		batch.BatchId = fmt.Sprintf("%s/%d/%d", topic, partition, offset)
	}
	if batch.Model == "" {
		batch.Model = op.spec.Name
	}
	if batch.Model != op.spec.Name {
		return op.dead(reasonUnknownModel, fmt.Sprintf("model %s is not served here (serving %s)",
			pyRepr(batch.Model), pyRepr(op.spec.Name)), value, batch, topic, partition, offset, appendMs, received)
	}
	var feeds map[string]*pb.Tensor
	if x == nil || !op.spec.simple() {
		if feeds, err = op.checkFeeds(batch, x, shape, shapes); err != nil {
			fe := err.(*feedError)
			return op.dead(fe.reason, fe.msg, value, batch, topic, partition, offset, appendMs, received)
		}
	} else {
		if x.GetDtype() != pb.DType_DTYPE_FLOAT32 {
			return op.dead(reasonBadDType, "expected float32 input, got "+dtypeName(int32(x.GetDtype())), value, batch,
				topic, partition, offset, appendMs, received)
		}
		if len(shape) == 0 || !slices.Equal(shape[1:], op.spec.Inputs[0].Shape) {
			return op.dead(reasonBadShape, "expected shape [batch, "+pyList(op.spec.Inputs[0].Shape)[1:]+", got "+
				pyList(shape), value, batch, topic, partition, offset, appendMs, received)
		}
		feeds = map[string]*pb.Tensor{op.oneName: x}
	}
	decodeNs := time.Since(t0).Nanoseconds()
	rows := firstRows(feeds, op.spec)

	if op.client != nil {
		return op.external(batch, named, feeds, value, received, decodeNs, appendMs, topic, partition, offset)
	}
	t1 := time.Now()
	ys, err := op.scorer.score(feeds, rows)
	if err != nil {
		return op.dead(reasonScoringError, err.Error(), value, batch, topic, partition, offset, appendMs, received)
	}
	return op.finish(batch, named, answer{Outputs: ys}, received, decodeNs, time.Since(t1).Nanoseconds(), appendMs)
}

func firstRows(feeds map[string]*pb.Tensor, spec *modelSpec) int64 {
	if t := feeds[spec.Inputs[0].Name]; t != nil && len(t.Shape) > 0 {
		return t.Shape[0]
	}
	return 0
}

// checkFeeds is serving.models.spec.check_feeds, with its messages: the batch's tensors by input
// name (x, shape: the single unnamed tensor; else shapes: those of the named inputs).
func (op *operator) checkFeeds(batch *pb.DataBatch, x *pb.Tensor, shape []int64,
	shapes map[string][]int64) (map[string]*pb.Tensor, error) {
	spec := op.spec
	names := spec.inputNames()
	if x != nil {
		if len(spec.Inputs) > 1 {
			return nil, &feedError{reasonBadShape, spec.Name + ": takes named inputs " + strings.Join(names, ", ") +
				", got one unnamed tensor"}
		}
		if err := op.checkOne(spec.Inputs[0], x, shape, -1); err != nil {
			return nil, err
		}
		return map[string]*pb.Tensor{names[0]: x}, nil
	}
	var missing, extra []string
	for _, n := range names {
		if batch.Inputs[n] == nil {
			missing = append(missing, n)
		}
	}
	for _, k := range sortedKeys(batch.Inputs) {
		if !slices.Contains(names, k) {
			extra = append(extra, k)
		}
	}
	if len(missing) > 0 || len(extra) > 0 {
		msg := spec.Name + ": inputs " + pyStrList(sortedKeys(batch.Inputs)) + " do not match the model's " +
			pyStrList(names)
		if len(missing) > 0 {
			msg += " (missing " + strings.Join(missing, ", ") + ")"
		}
		if len(extra) > 0 {
			msg += " (unknown " + strings.Join(extra, ", ") + ")"
		}
		return nil, &feedError{reasonBadShape, msg}
	}
	feeds := make(map[string]*pb.Tensor, len(names))
	rows := int64(-1)
	for _, t := range spec.Inputs {
		s := shapes[t.Name]
		if err := op.checkOne(t, batch.Inputs[t.Name], s, rows); err != nil {
			return nil, err
		}
		rows = s[0]
		feeds[t.Name] = batch.Inputs[t.Name]
	}
	return feeds, nil
}

// checkOne is check_feeds' _check_one; rows of the first input, -1 for the first itself.
func (op *operator) checkOne(t tensorSpec, x *pb.Tensor, shape []int64, rows int64) error {
	got := dtypeName(int32(x.GetDtype())) + " " + pyList(shape)
	if int32(x.GetDtype()) != t.Code {
		return &feedError{reasonBadDType, op.spec.Name + ": input " + t.Name + ": expected " + t.want() + ", got " + got}
	}
	if len(shape) == 0 || !slices.Equal(shape[1:], t.Shape) || shape[0] < 1 {
		return &feedError{reasonBadShape, op.spec.Name + ": input " + t.Name + ": expected " + t.want() + ", got " + got}
	}
	if rows >= 0 && shape[0] != rows {
		return &feedError{reasonBadShape, fmt.Sprintf("%s: input %s has %d rows, %s has %d: every input shares "+
			"the batch axis", op.spec.Name, t.Name, shape[0], op.spec.Inputs[0].Name, rows)}
	}
	return nil
}

// external is sps_workers.external.ExternalStage in blocking mode: retries with doubling
// backoff, then a dead letter with the Python client's error names.
func (op *operator) external(batch *pb.DataBatch, named bool, feeds map[string]*pb.Tensor, value []byte,
	received, decodeNs, appendMs int64, topic string, partition int32, offset int64) result {
	for attempt := 1; ; attempt++ {
		started := time.Now()
		a, err := op.client.score(feeds, named)
		if err == nil {
			return op.finish(batch, named, a, received, decodeNs, time.Since(started).Nanoseconds(), appendMs)
		}
		ce := err.(*callError)
		if ce.retriable && attempt <= op.retries {
			time.Sleep(time.Duration(op.backoffS * float64(int64(1)<<(attempt-1)) * float64(time.Second)))
			continue
		}
		detail := fmt.Sprintf("scoring at %s after %d attempt(s): %s: %s", op.client.target, attempt, ce.pyType, ce.msg)
		return op.dead(ce.reason, detail, value, batch, topic, partition, offset, appendMs, received)
	}
}

// finish encodes the ScoredBatch. The output goes back the way the input came: by name (several
// outputs, or a named batch), else the single output tensor.
func (op *operator) finish(batch *pb.DataBatch, named bool, a answer, received, decodeNs, inferenceNs,
	appendMs int64) result {
	t2 := time.Now()
	out := &pb.ScoredBatch{BatchId: batch.BatchId, RunId: batch.RunId, Sequence: batch.Sequence,
		IntendedNs: batch.IntendedNs, CreatedNs: batch.CreatedNs, Model: batch.Model, InputAppendMs: appendMs,
		Attributes: batch.Attributes}
	ys := a.Outputs
	if ys == nil {
		ys = map[string]*pb.Tensor{op.spec.Outputs[0].Name: a.Output}
	}
	if named || len(op.spec.Outputs) > 1 || len(ys) > 1 {
		out.Outputs = ys
	} else {
		out.Output = ys[op.spec.Outputs[0].Name]
		if out.Output == nil { // a server answering under another name: its only tensor
			for _, y := range ys {
				out.Output = y
			}
		}
	}
	f := &pb.ScoringFacts{Backend: op.backend, WorkerId: op.workerID, Engine: engineName, WorkerReceiveNs: received,
		DecodeNs: decodeNs, InferenceNs: inferenceNs, ServerInferenceNs: a.ServerInferenceNs,
		ServerQueueNs: a.ServerQueue, Server: a.Server}
	out.Facts = f
	// encode_ns covers building the message; the bytes are then produced as they are.
	f.EncodeNs = time.Since(t2).Nanoseconds()
	f.WorkerSendNs = wallNs()
	data, err := proto.Marshal(out)
	if err != nil {
		return op.dead(reasonScoringError, "bad output from "+op.backend+": "+err.Error(), nil, batch, "", 0, 0,
			appendMs, received)
	}
	return result{Value: data, Timing: &timing{BatchID: batch.BatchId, ReceivedNs: received, DecodeNs: decodeNs,
		InferenceNs: inferenceNs, EncodeNs: f.EncodeNs, SendNs: f.WorkerSendNs}}
}

func (op *operator) dead(reason, detail string, value []byte, batch *pb.DataBatch, topic string, partition int32,
	offset, appendMs, received int64) result {
	d := pyHead(detail, detailMax)
	dl := &pb.DeadLetter{Reason: reason, Detail: d, SourceTopic: topic, SourcePartition: partition,
		SourceOffset: offset, Payload: value, InputAppendMs: appendMs}
	if batch != nil {
		dl.BatchId, dl.RunId, dl.CreatedNs, dl.IntendedNs = batch.BatchId, batch.RunId, batch.CreatedNs,
			batch.IntendedNs
	}
	dl.Facts = &pb.ScoringFacts{Backend: op.backend, WorkerId: op.workerID, Engine: engineName,
		WorkerReceiveNs: received, Error: d, WorkerSendNs: wallNs()}
	data, _ := proto.Marshal(dl)
	return result{DeadLetter: data, Reason: reason}
}

// warmup runs the whole path on zero batches of one item, rounds times, before the first record.
func (op *operator) warmup(rounds int) {
	b := &pb.DataBatch{BatchId: "warmup", Model: op.spec.Name}
	for _, t := range op.spec.Inputs {
		z := zerosTensor(t.Code, 1, t.Shape)
		if len(op.spec.Inputs) > 1 {
			if b.Inputs == nil {
				b.Inputs = map[string]*pb.Tensor{}
			}
			b.Inputs[t.Name] = z
		} else {
			b.Input = z
		}
	}
	value, _ := proto.Marshal(b)
	for i := 0; i < rounds; i++ {
		op.process(value, 0, "warmup", 0, int64(i))
	}
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
