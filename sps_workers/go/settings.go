package main

// The WorkerSettings JSON document (sps_workers/settings.py). The Python launcher has validated
// it already (pydantic, GoOptions); this side checks again what the binary itself relies on, so a
// binary started by hand fails the same way: one line naming the field, exit code 2.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

const engineName = "go"

// configError is a bad setting: main prints "go worker: <message>" and exits 2.
type configError struct{ msg string }

func (e *configError) Error() string { return e.msg }

func configErrorf(format string, args ...any) error {
	return &configError{fmt.Sprintf(format, args...)}
}

// external is ExternalSettings: how to reach the model server.
type external struct {
	Client        string         `json:"client"`
	Target        string         `json:"target"`
	CallMode      string         `json:"call_mode"`
	TimeoutS      float64        `json:"timeout_s"`
	Retries       int            `json:"retries"`
	BackoffS      float64        `json:"backoff_s"`
	ClientOptions map[string]any `json:"client_options"`
}

// goOptions are the engine_options of this engine (sps_workers/go/options.py, same keys and
// defaults). Extension point: a new knob is one field here, one in GoOptions, one line in README.
type goOptions struct {
	CommitIntervalMs int `json:"commit_interval_ms"`
	FetchMaxWaitMs   int `json:"fetch_max_wait_ms"`
	WarmupRounds     int `json:"warmup_rounds"`
}

var engineOptionKeys = []string{"commit_interval_ms", "fetch_max_wait_ms", "warmup_rounds"}

// settings is the part of WorkerSettings this worker reads; unknown top-level fields are ignored
// (as pydantic does).
type settings struct {
	Bootstrap       string                     `json:"bootstrap"`
	KafkaClient     kafkaClient                `json:"kafka_client"`
	InputTopic      string                     `json:"input_topic"`
	OutputTopic     string                     `json:"output_topic"`
	DeadLetterTopic string                     `json:"dead_letter_topic"`
	ConsumerGroup   string                     `json:"consumer_group"`
	Codec           string                     `json:"codec"`
	Model           string                     `json:"model"`
	Backend         string                     `json:"backend"`
	BackendOptions  map[string]json.RawMessage `json:"backend_options"`
	ModelsDir       *string                    `json:"models_dir"`
	Parallelism     int                        `json:"parallelism"`
	WorkerID        string                     `json:"worker_id"`
	MaxPollRecords  int                        `json:"max_poll_records"`
	External        *external                  `json:"external"`
	ReadyFile       *string                    `json:"ready_file"`
	EngineOptions   map[string]json.RawMessage `json:"engine_options"`
	Options         goOptions                  `json:"-"`
	kafka           kafkaSetup                 // from KafkaClient (kafkaclient.go)
}

// loadSettings reads --config: a JSON document, or @path of one.
func loadSettings(arg string) (*settings, error) {
	raw := []byte(arg)
	if strings.HasPrefix(arg, "@") {
		var err error
		if raw, err = os.ReadFile(arg[1:]); err != nil {
			return nil, configErrorf("--config: cannot read %s: %v", arg[1:], err)
		}
	}
	return parseSettings(raw)
}

func parseSettings(raw []byte) (*settings, error) {
	s := &settings{Codec: "protobuf", Backend: "onnxruntime", Parallelism: 1, WorkerID: "kafka", MaxPollRecords: 256,
		Options: goOptions{CommitIntervalMs: 100, FetchMaxWaitMs: 10, WarmupRounds: 10}}
	dec := json.NewDecoder(bytes.NewReader(raw))
	if err := dec.Decode(s); err != nil {
		return nil, configErrorf("--config: not a WorkerSettings JSON object: %v", err)
	}
	for field, v := range map[string]string{"bootstrap": s.Bootstrap, "input_topic": s.InputTopic,
		"output_topic": s.OutputTopic, "dead_letter_topic": s.DeadLetterTopic, "consumer_group": s.ConsumerGroup,
		"model": s.Model} {
		if v == "" {
			return nil, configErrorf("%s: Field required", field)
		}
	}
	if s.Parallelism < 1 {
		return nil, configErrorf("parallelism: Input should be greater than or equal to 1, got %d", s.Parallelism)
	}
	if s.MaxPollRecords < 1 {
		return nil, configErrorf("max_poll_records: Input should be greater than or equal to 1, got %d",
			s.MaxPollRecords)
	}
	if err := checkSupported(s); err != nil {
		return nil, err
	}
	if err := readEngineOptions(s); err != nil {
		return s, err
	}
	// The secrets' references are resolved here, in this process (the settings hold references only).
	var err error
	s.kafka, err = s.KafkaClient.kafkaOptions()
	return s, err
}

// checkSupported refuses what this engine does not implement, naming the field (the Python
// launcher says the same before building).
func checkSupported(s *settings) error {
	if s.Codec != "protobuf" {
		return configErrorf("codec: %s is not supported by the %s engine (it speaks the protobuf codec only)",
			pyRepr(s.Codec), engineName)
	}
	e := s.External
	if e == nil {
		return nil
	}
	if e.CallMode == "" {
		e.CallMode = "blocking"
	}
	if e.Client != "scoring" {
		return configErrorf("external.client: %s is not supported by the %s engine; it calls the "+
			"crayfish.v1.Scoring gRPC service ('scoring') only", pyRepr(e.Client), engineName)
	}
	if e.CallMode != "blocking" {
		return configErrorf("external.call_mode: %s is not supported by the %s engine; each instance scores one "+
			"record at a time ('blocking')", pyRepr(e.CallMode), engineName)
	}
	if e.Target == "" {
		return configErrorf("external.target: Field required")
	}
	if e.TimeoutS <= 0 {
		e.TimeoutS = 5.0
	}
	for k := range e.ClientOptions {
		if k != "root_cert_file" {
			return configErrorf("external.client_options: unknown option %s; the scoring client takes: "+
				"'root_cert_file'", pyRepr(k))
		}
	}
	return nil
}

func readEngineOptions(s *settings) error {
	var unknown []string
	for k := range s.EngineOptions {
		known := false
		for _, o := range engineOptionKeys {
			known = known || k == o
		}
		if !known {
			unknown = append(unknown, "engine_options."+k)
		}
	}
	if len(unknown) > 0 {
		sort.Strings(unknown)
		plural := ""
		if len(unknown) > 1 {
			plural = "s"
		}
		return configErrorf("%s: unknown option%s of the %s engine (known: %s)", strings.Join(unknown, ", "),
			plural, engineName, strings.Join(engineOptionKeys, ", "))
	}
	raw, _ := json.Marshal(s.EngineOptions)
	if err := json.Unmarshal(raw, &s.Options); err != nil {
		return configErrorf("engine_options: %v", err)
	}
	o := s.Options
	for _, c := range []struct {
		name   string
		v, min int
	}{{"commit_interval_ms", o.CommitIntervalMs, 0}, {"fetch_max_wait_ms", o.FetchMaxWaitMs, 10},
		{"warmup_rounds", o.WarmupRounds, 0}} {
		if c.v < c.min {
			return configErrorf("engine_options.%s: Input should be greater than or equal to %d, got %d", c.name,
				c.min, c.v)
		}
	}
	return nil
}

// modelsRoot: models_dir, else $CRAYFISH_MODELS_DIR, else .cache/models.
func (s *settings) modelsRoot() string {
	if s.ModelsDir != nil && *s.ModelsDir != "" {
		return *s.ModelsDir
	}
	if env := os.Getenv("CRAYFISH_MODELS_DIR"); env != "" {
		return env
	}
	return filepath.Join(".cache", "models")
}

func (e *external) rootCertFile() string {
	if v, ok := e.ClientOptions["root_cert_file"].(string); ok {
		return v
	}
	return ""
}
