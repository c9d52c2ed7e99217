package main

// One parallel instance: a franz-go client that is a member of WorkerSettings.consumer_group
// (the runner's readiness check counts the members) and produces the outputs, plus its own
// operator (one ORT session or one gRPC channel). At-least-once: the input offsets of a poll are
// marked only after every output of that poll is acknowledged (Flush), and only marked offsets are
// committed (every commit_interval_ms, on revoke, and on stop).

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

type instance struct {
	s        *settings
	workerID string
	op       *operator
	release  func() // closes the scorer or the client
	tr       *tracing
	cl       *kgo.Client
}

// newInstance builds the scoring side (failing fast on bad backend options or model files) and
// the Kafka client; nothing joins the group before run.
func newInstance(s *settings, spec *modelSpec, tr *tracing, index int, onAssigned func()) (*instance, error) {
	in := &instance{s: s, workerID: fmt.Sprintf("%s-%d", s.WorkerID, index), tr: tr}
	if s.External != nil {
		c, err := newScoringClient(s.External, s.Model)
		if err != nil {
			return nil, err
		}
		in.op, in.release = newOperator(spec, in.workerID, nil, c, s.External), c.close
	} else {
		sc, err := newScorer(s, spec)
		if err != nil {
			return nil, err
		}
		in.op, in.release = newOperator(spec, in.workerID, sc, nil, nil), sc.close
		in.op.warmup(s.Options.WarmupRounds)
	}
	opts := []kgo.Opt{
		kgo.SeedBrokers(strings.Split(s.Bootstrap, ",")...),
		kgo.ClientID(s.WorkerID),
		kgo.ConsumerGroup(s.ConsumerGroup),
		kgo.ConsumeTopics(s.InputTopic),
		// Group offsets first: on a shared input topic the runner commits this run's start for the
		// group before starting the worker; a fresh topic has none, so the group starts at its start.
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.BlockRebalanceOnPoll(), // no revoke between a poll and the marking of its offsets
		kgo.AutoCommitMarks(),
		kgo.OnPartitionsAssigned(func(context.Context, *kgo.Client, map[string][]int32) { onAssigned() }),
		// The baseline worker's latency choices: short fetch wait and sessions, no linger, 64 MiB messages.
		kgo.FetchMaxWait(time.Duration(s.Options.FetchMaxWaitMs) * time.Millisecond),
		kgo.FetchMaxBytes(maxMessageBytes),
		kgo.FetchMaxPartitionBytes(maxMessageBytes),
		kgo.SessionTimeout(10 * time.Second),
		kgo.HeartbeatInterval(time.Second),
		kgo.ProducerLinger(0),
		kgo.RequiredAcks(kgo.AllISRAcks()),
		kgo.ProducerBatchCompression(kgo.NoCompression()),
		kgo.ProducerBatchMaxBytes(maxMessageBytes + 1<<20),
		kgo.WithLogger(kgo.BasicLogger(os.Stderr, kgo.LogLevelWarn, func() string { return "go worker: kgo: " })),
	}
	opts = append(opts, s.kafka.opts...) // the cluster's security: TLS, mutual TLS, SASL
	if s.Options.CommitIntervalMs > 0 {
		opts = append(opts, kgo.AutoCommitInterval(time.Duration(s.Options.CommitIntervalMs)*time.Millisecond))
	}
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		in.release()
		return nil, configErrorf("bootstrap: %v", err)
	}
	in.cl = cl
	return in, nil
}

// run polls, scores and produces until ctx is done (SIGTERM) or a write fails.
func (in *instance) run(ctx context.Context) error {
	for {
		fetches := in.cl.PollRecords(ctx, in.s.MaxPollRecords)
		if fetches.IsClientClosed() {
			return nil
		}
		fetches.EachError(func(topic string, p int32, err error) {
			if !errors.Is(err, context.Canceled) {
				fmt.Fprintf(os.Stderr, "go worker: %s: fetch %s[%d]: %v\n", in.workerID, topic, p, err)
			}
		})
		// Records polled before the stop are still scored, written and committed.
		if recs := fetches.Records(); len(recs) > 0 {
			if err := in.handle(recs); err != nil {
				in.cl.AllowRebalance()
				return err
			}
		}
		in.cl.AllowRebalance()
		if ctx.Err() != nil {
			return nil
		}
	}
}

// handle scores one poll's records, produces every result and waits for the acknowledgements
// before marking the input offsets for commit.
func (in *instance) handle(recs []*kgo.Record) error {
	var mu sync.Mutex
	var failed error
	done := func(r *kgo.Record, err error) {
		if err != nil {
			mu.Lock()
			if failed == nil {
				failed = fmt.Errorf("producing to %s: %w", r.Topic, err)
			}
			mu.Unlock()
		}
	}
	for _, r := range recs {
		res := in.op.process(r.Value, r.Timestamp.UnixMilli(), r.Topic, r.Partition, r.Offset)
		// no Timestamp: the producer stamps now (CreateTime topics), the broker its append (LogAppendTime)
		out := &kgo.Record{Key: r.Key, Topic: in.s.OutputTopic, Value: res.Value}
		if res.Value == nil {
			out.Topic, out.Value = in.s.DeadLetterTopic, res.DeadLetter
		} else if in.tr.enabled() && res.Timing != nil {
			if hs := headersOf(r); sampledTraceparent(hs["traceparent"]) {
				for k, v := range in.tr.recordWorker(hs, r.Topic, r.Partition, r.Offset, res.Timing, in.s.OutputTopic) {
					out.Headers = append(out.Headers, kgo.RecordHeader{Key: k, Value: []byte(v)})
				}
			}
		}
		in.cl.Produce(context.Background(), out, done)
	}
	if err := in.cl.Flush(context.Background()); err != nil {
		return err
	}
	if failed != nil {
		return failed // not marked: the records are read again after a restart
	}
	in.cl.MarkCommitRecords(recs...)
	if in.s.Options.CommitIntervalMs == 0 {
		return in.cl.CommitMarkedOffsets(context.Background())
	}
	return nil
}

func headersOf(r *kgo.Record) headerCarrier {
	hs := headerCarrier{}
	for _, h := range r.Headers {
		hs.Set(h.Key, string(h.Value))
	}
	return hs
}

// stop commits what was marked, leaves the group and closes the scorer or client.
func (in *instance) stop() error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := in.cl.CommitMarkedOffsets(ctx)
	in.cl.CloseAllowingRebalance()
	in.release()
	return err
}
