// The Go scoring worker of Crayfish Mesh: go-worker --config <WorkerSettings JSON | @file>
// (or $CRAYFISH_WORKER_SETTINGS = the path of one). See sps_workers/go/README.md and __main__.py
// for what it supports and how it maps to Kafka.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
)

const settingsEnv = "CRAYFISH_WORKER_SETTINGS"

func main() {
	config, validate := "", false
	for i := 1; i < len(os.Args); i++ {
		switch {
		case os.Args[i] == "--config" && i+1 < len(os.Args):
			i++
			config = os.Args[i]
		case os.Args[i] == "--validate":
			validate = true
		default:
			usage("unknown argument " + os.Args[i])
		}
	}
	if config == "" && os.Getenv(settingsEnv) != "" {
		config = "@" + os.Getenv(settingsEnv)
	}
	if config == "" {
		usage("--config (or $" + settingsEnv + ") is required")
	}
	os.Exit(run(config, validate))
}

func usage(why string) {
	fmt.Fprintf(os.Stderr, "go worker: %s\nusage: go-worker --config <WorkerSettings JSON | @file> [--validate]\n", why)
	os.Exit(2)
}

// run returns the exit status: 0 after a clean stop, 2 for a bad config, 1 for a failure.
func run(config string, validate bool) int {
	s, err := loadSettings(config)
	if err != nil {
		return fail(err)
	}
	if len(s.kafka.ignored) > 0 {
		fmt.Fprintf(os.Stderr, "go worker: warning: kafka_client properties without a franz-go equivalent, "+
			"ignored: %s\n", strings.Join(s.kafka.ignored, ", "))
	}
	spec, err := loadModelSpec(s.modelsRoot(), s.Model)
	if err != nil {
		return fail(err)
	}
	tr, err := newTracing(s.WorkerID + "-worker")
	if err != nil {
		return fail(err)
	}
	defer tr.close() // after the instances: the spans of the last batches are flushed
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()

	var ready sync.Once
	onAssigned := func() { ready.Do(func() { markReady(s) }) }
	// Every instance is built before any joins the group: bad backend options or model files fail fast.
	instances := make([]*instance, 0, s.Parallelism)
	for i := 0; i < s.Parallelism; i++ {
		in, err := newInstance(s, spec, tr, i, onAssigned)
		if err != nil {
			for _, done := range instances {
				done.stop()
			}
			return fail(err)
		}
		instances = append(instances, in)
	}
	if validate {
		for _, in := range instances {
			in.stop()
		}
		fmt.Println("ok")
		return 0
	}
	where := "backend=" + s.Backend
	if s.External != nil {
		where = "server=" + s.External.Target
	}
	fmt.Fprintf(os.Stderr, "go worker: group=%s instances=%d %s model=%s input=%s security=%s\n", s.ConsumerGroup,
		s.Parallelism, where, s.Model, s.InputTopic, s.kafka.security)

	// One goroutine per instance; the first failure stops them all.
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	errs := make([]error, len(instances))
	var wg sync.WaitGroup
	for i, in := range instances {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if errs[i] = in.run(runCtx); errs[i] != nil {
				cancel()
			}
		}()
	}
	wg.Wait()
	code := 0
	for i, in := range instances {
		if err := errors.Join(errs[i], in.stop()); err != nil {
			fmt.Fprintf(os.Stderr, "go worker: %s: %v\n", in.workerID, err)
			code = 1
		}
	}
	return code
}

func fail(err error) int {
	fmt.Fprintf(os.Stderr, "go worker: %v\n", err)
	var ce *configError
	if errors.As(err, &ce) {
		return 2
	}
	return 1
}

// markReady writes settings.ready_file (atomically) once the first instance has partitions.
func markReady(s *settings) {
	if s.ReadyFile == nil || *s.ReadyFile == "" {
		return
	}
	tmp := fmt.Sprintf("%s.%d.tmp", *s.ReadyFile, os.Getpid())
	if err := os.WriteFile(tmp, []byte("ready\n"), 0o644); err != nil || os.Rename(tmp, *s.ReadyFile) != nil {
		fmt.Fprintf(os.Stderr, "go worker: cannot write the ready file %s\n", *s.ReadyFile)
	}
}
