package main

// observability.wiring.BatchTracing (worker side) for Go, with the OpenTelemetry Go SDK, as the
// Java worker's Tracing does.
//
// On only when OTEL_SDK_DISABLED is not true and spans have somewhere to go: an OTLP endpoint
// (OTEL_EXPORTER_OTLP[_TRACES]_ENDPOINT, OTLP/gRPC) or CRAYFISH_SPANS_DIR (JSON lines in
// <dir>/spans/<service>-<pid>.jsonl, spanfile.go). The SDK reads OTEL_TRACES_SAMPLER/_ARG and
// OTEL_BSP_* itself. A batch is traced only when its input carries a sampled W3C traceparent; its
// spans are recorded after the fact from the operator's own stamps: "process <topic>" (CONSUMER,
// child of the incoming context) with crayfish.decode / crayfish.score / crayfish.encode children
// and a "send <out topic>" PRODUCER span whose context travels on in the output's traceparent.

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
)

const spansDirEnv = "CRAYFISH_SPANS_DIR"

type tracing struct {
	provider *sdktrace.TracerProvider
	tracer   trace.Tracer
	service  string
	spanFile string
}

var w3c = propagation.TraceContext{}

func (t *tracing) enabled() bool { return t.tracer != nil }

func newTracing(defaultService string) (*tracing, error) {
	endpoint := firstNonEmpty(os.Getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"), os.Getenv("OTEL_EXPORTER_OTLP_ENDPOINT"))
	spansDir := os.Getenv(spansDirEnv)
	service := serviceName(defaultService)
	t := &tracing{service: service}
	if strings.EqualFold(strings.TrimSpace(os.Getenv("OTEL_SDK_DISABLED")), "true") || (endpoint == "" && spansDir == "") {
		return t, nil
	}
	res, err := resource.New(context.Background(), resource.WithFromEnv(),
		resource.WithAttributes(attribute.String("service.name", service)))
	if err != nil {
		res = resource.NewSchemaless(attribute.String("service.name", service))
	}
	opts := []sdktrace.TracerProviderOption{sdktrace.WithResource(res)}
	switch choice := strings.ToLower(strings.TrimSpace(os.Getenv("OTEL_TRACES_EXPORTER"))); {
	case choice == "none": // spans are made (the trace context travels on) but go nowhere
	case endpoint != "":
		exp, err := otlptracegrpc.New(context.Background()) // reads OTEL_EXPORTER_OTLP_* itself
		if err != nil {
			return nil, err
		}
		opts = append(opts, sdktrace.WithBatcher(exp))
	default:
		exp := newSpanFile(filepath.Join(spansDir, "spans"), service)
		t.spanFile = exp.path
		opts = append(opts, sdktrace.WithBatcher(exp))
	}
	t.provider = sdktrace.NewTracerProvider(opts...)
	t.tracer = t.provider.Tracer("crayfish")
	return t, nil
}

// serviceName is observability.otel.service_name: OTEL_SERVICE_NAME, else service.name of
// OTEL_RESOURCE_ATTRIBUTES, else dflt.
func serviceName(dflt string) string {
	if n := os.Getenv("OTEL_SERVICE_NAME"); n != "" {
		return n
	}
	for _, kv := range strings.Split(os.Getenv("OTEL_RESOURCE_ATTRIBUTES"), ",") {
		k, v, ok := strings.Cut(kv, "=")
		if ok && strings.TrimSpace(k) == "service.name" && strings.TrimSpace(v) != "" {
			return strings.TrimSpace(v)
		}
	}
	return dflt
}

func firstNonEmpty(xs ...string) string {
	for _, x := range xs {
		if x != "" {
			return x
		}
	}
	return ""
}

// headerCarrier is a record's headers as a W3C carrier (keys lower-cased).
type headerCarrier map[string]string

func (c headerCarrier) Get(k string) string { return c[strings.ToLower(k)] }
func (c headerCarrier) Set(k, v string)     { c[strings.ToLower(k)] = v }
func (c headerCarrier) Keys() []string      { return sortedKeys(c) }

// sampledTraceparent is observability.light.sampled_traceparent: a traceparent whose sampled flag is set.
func sampledTraceparent(tp string) bool {
	if len(tp) < 2 {
		return false
	}
	flags, err := strconv.ParseUint(tp[len(tp)-2:], 16, 8)
	return err == nil && flags&1 == 1
}

// recordWorker is observability.wiring.BatchTracing.record_worker: the worker's spans of one sampled
// batch; it returns the output's headers carrying the trace on.
func (t *tracing) recordWorker(in headerCarrier, topic string, partition int32, offset int64, tm *timing,
	outTopic string) headerCarrier {
	at := func(ns int64) trace.SpanStartEventOption { return trace.WithTimestamp(time.Unix(0, ns)) }
	ctx, process := t.tracer.Start(w3c.Extract(context.Background(), in), "process "+topic, at(tm.ReceivedNs),
		trace.WithSpanKind(trace.SpanKindConsumer), trace.WithAttributes(
			attribute.String("messaging.system", "kafka"), attribute.String("messaging.destination.name", topic),
			attribute.String("messaging.operation", "process"), attribute.String("messaging.operation.type", "process"),
			attribute.String("messaging.destination.partition.id", strconv.Itoa(int(partition))),
			attribute.Int64("messaging.kafka.offset", offset), attribute.String("crayfish.batch_id", tm.BatchID)))
	start := tm.ReceivedNs
	for _, hop := range []struct {
		name string
		dur  int64
	}{{"decode", tm.DecodeNs}, {"score", tm.InferenceNs}, {"encode", tm.EncodeNs}} {
		_, child := t.tracer.Start(ctx, "crayfish."+hop.name, at(start), trace.WithAttributes(
			attribute.String("crayfish.hop", hop.name), attribute.String("crayfish.batch_id", tm.BatchID)))
		child.End(trace.WithTimestamp(time.Unix(0, start+hop.dur)))
		start += hop.dur
	}
	sendCtx, send := t.tracer.Start(ctx, "send "+outTopic, at(tm.SendNs), trace.WithSpanKind(trace.SpanKindProducer),
		trace.WithAttributes(attribute.String("messaging.system", "kafka"),
			attribute.String("messaging.destination.name", outTopic), attribute.String("messaging.operation", "publish"),
			attribute.String("messaging.operation.type", "send"), attribute.String("crayfish.batch_id", tm.BatchID)))
	out := headerCarrier{}
	w3c.Inject(sendCtx, out)
	send.End()
	process.End(trace.WithTimestamp(time.Unix(0, tm.SendNs)))
	return out
}

// close flushes and stops the exporter (spans of the last batches written).
func (t *tracing) close() {
	if t.provider == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_ = t.provider.ForceFlush(ctx)
	_ = t.provider.Shutdown(ctx)
}
