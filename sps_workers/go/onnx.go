package main

// The onnxruntime backend: the model's ONNX export (<models_dir>/<model>/<model>.onnx, the same file
// as the Python backend) in one ONNX Runtime session, through its C API (github.com/yalue/
// onnxruntime_go, cgo), loading at run time the libonnxruntime.so that the onnxruntime wheel of
// the core venv ships: the launcher passes its path in CRAYFISH_ORT_LIB. Every input is fed by
// name with its own dtype, every output of the model comes back by name with its dtype.

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"unsafe"

	pb "crayfish/go-worker/pb"
	ort "github.com/yalue/onnxruntime_go"
)

// ortLibEnv names the shared library to load (set by sps_workers/go/__main__.py).
const ortLibEnv = "CRAYFISH_ORT_LIB"

var (
	ortOnce sync.Once
	ortErr  error
)

// initORT loads the library and creates the process-wide ORT environment, once.
func initORT() error {
	ortOnce.Do(func() {
		lib := os.Getenv(ortLibEnv)
		if lib == "" {
			ortErr = configErrorf("backend: 'onnxruntime' needs %s (the path of libonnxruntime.so; the launcher "+
				"sets it from the onnxruntime wheel)", ortLibEnv)
			return
		}
		ort.SetSharedLibraryPath(lib)
		if err := ort.InitializeEnvironment(ort.WithLogLevelError()); err != nil {
			ortErr = configErrorf("backend: 'onnxruntime': cannot load %s: %v", lib, err)
		}
	})
	return ortErr
}

// ortTypes maps DType codes to ONNX element types: the dtypes this backend feeds and reads.
var ortTypes = map[pb.DType]ort.TensorElementDataType{
	pb.DType_DTYPE_FLOAT32: ort.TensorElementDataTypeFloat, pb.DType_DTYPE_FLOAT64: ort.TensorElementDataTypeDouble,
	pb.DType_DTYPE_FLOAT16: ort.TensorElementDataTypeFloat16, pb.DType_DTYPE_INT8: ort.TensorElementDataTypeInt8,
	pb.DType_DTYPE_INT16: ort.TensorElementDataTypeInt16, pb.DType_DTYPE_INT32: ort.TensorElementDataTypeInt32,
	pb.DType_DTYPE_INT64: ort.TensorElementDataTypeInt64, pb.DType_DTYPE_UINT8: ort.TensorElementDataTypeUint8,
	pb.DType_DTYPE_UINT16: ort.TensorElementDataTypeUint16, pb.DType_DTYPE_UINT32: ort.TensorElementDataTypeUint32,
	pb.DType_DTYPE_UINT64: ort.TensorElementDataTypeUint64, pb.DType_DTYPE_BOOL: ort.TensorElementDataTypeBool,
}

type onnxScorer struct {
	session *ort.DynamicAdvancedSession
	inputs  []tensorSpec
	outputs []tensorSpec
}

var graphLevels = map[string]ort.GraphOptimizationLevel{"disable": ort.GraphOptimizationLevelDisableAll,
	"basic": ort.GraphOptimizationLevelEnableBasic, "extended": ort.GraphOptimizationLevelEnableExtended,
	"all": ort.GraphOptimizationLevelEnableAll}

func newOnnxScorer(s *settings, spec *modelSpec) (scorer, error) {
	o, err := newBackendOptions("onnxruntime", s.BackendOptions,
		[]string{"intra_op_threads", "inter_op_threads", "device", "graph_optimization"})
	if err != nil {
		return nil, err
	}
	intra, err := o.integer("intra_op_threads", 1) // 1/1 by default, as the paper
	if err != nil {
		return nil, err
	}
	inter, err := o.integer("inter_op_threads", 1)
	if err != nil {
		return nil, err
	}
	device, err := o.choice("device", "cpu", nil)
	if err != nil {
		return nil, err
	}
	level, err := o.choice("graph_optimization", "all", []string{"disable", "basic", "extended", "all"})
	if err != nil {
		return nil, err
	}
	if strings.ToLower(device) != "cpu" {
		return nil, configErrorf("backend_options: backend 'onnxruntime': device %s; the %s engine runs the CPU "+
			"build of the onnxruntime wheel (cpu only)", pyRepr(device), engineName)
	}
	path := filepath.Join(s.modelsRoot(), spec.Name, spec.Name+".onnx")
	if st, err := os.Stat(path); err != nil || !st.Mode().IsRegular() {
		return nil, configErrorf("models_dir: backend 'onnxruntime': no ONNX file at %s; run `python -m "+
			"serving.models build --model %s`", path, spec.Name)
	}
	if err := initORT(); err != nil {
		return nil, err
	}
	if err := checkModelFile(path, spec); err != nil {
		return nil, err
	}
	so, err := ort.NewSessionOptions()
	if err != nil {
		return nil, err
	}
	defer so.Destroy()
	for _, step := range []error{so.SetIntraOpNumThreads(int(intra)), so.SetInterOpNumThreads(int(inter)),
		so.SetExecutionMode(ort.ExecutionModeSequential), so.SetGraphOptimizationLevel(graphLevels[level]),
		so.SetLogSeverityLevel(ort.LoggingLevelError)} {
		if step != nil {
			return nil, configErrorf("backend_options: backend 'onnxruntime': %v", step)
		}
	}
	outNames := make([]string, len(spec.Outputs))
	for i, t := range spec.Outputs {
		outNames[i] = t.Name
	}
	session, err := ort.NewDynamicAdvancedSession(path, spec.inputNames(), outNames, so)
	if err != nil {
		return nil, configErrorf("models_dir: backend 'onnxruntime': cannot load %s: %v", path, err)
	}
	return &onnxScorer{session: session, inputs: spec.Inputs, outputs: spec.Outputs}, nil
}

// checkModelFile: the file's inputs are the manifest's, and it has every output the manifest names.
func checkModelFile(path string, spec *modelSpec) error {
	ins, outs, err := ort.GetInputOutputInfo(path)
	if err != nil {
		return configErrorf("models_dir: backend 'onnxruntime': cannot load %s: %v", path, err)
	}
	names := func(xs []ort.InputOutputInfo) []string {
		out := make([]string, len(xs))
		for i, x := range xs {
			out[i] = x.Name
		}
		sort.Strings(out)
		return out
	}
	hasIn, hasOut := names(ins), names(outs)
	wantIn := spec.inputNames()
	sort.Strings(wantIn)
	var wantOut []string
	ok := slices.Equal(hasIn, wantIn)
	for _, t := range spec.Outputs {
		wantOut = append(wantOut, t.Name)
		ok = ok && slices.Contains(hasOut, t.Name)
	}
	if !ok {
		return configErrorf("models_dir: backend 'onnxruntime': %s has inputs %s / outputs %s, expected %s / %s",
			path, pyStrList(hasIn), pyStrList(hasOut), pyStrList(wantIn), pyStrList(wantOut))
	}
	return nil
}

func (o *onnxScorer) name() string { return "onnxruntime" }

func (o *onnxScorer) close() { o.session.Destroy() }

func (o *onnxScorer) score(feeds map[string]*pb.Tensor, rows int64) (map[string]*pb.Tensor, error) {
	inputs := make([]ort.Value, len(o.inputs))
	defer func() {
		for _, v := range inputs {
			if v != nil {
				v.Destroy()
			}
		}
	}()
	for i, t := range o.inputs {
		x := feeds[t.Name]
		// The tensor's bytes as they are (little-endian, C order): ORT reads them without a copy.
		v, err := ort.NewCustomDataTensor(ort.NewShape(x.Shape...), x.Data, ortTypes[x.Dtype])
		if err != nil {
			return nil, fmt.Errorf("OrtError: input %s: %v", t.Name, err)
		}
		inputs[i] = v
	}
	// nil: ORT allocates the output. float16 outputs are given a buffer of the manifest's shape
	// instead: onnxruntime_go v1.27 copies ORT-allocated float16 data with one byte per element.
	outputs := make([]ort.Value, len(o.outputs))
	for i, t := range o.outputs {
		if t.Code == int32(pb.DType_DTYPE_FLOAT16) {
			z := zerosTensor(t.Code, rows, t.Shape)
			v, err := ort.NewCustomDataTensor(ort.NewShape(z.Shape...), z.Data, ort.TensorElementDataTypeFloat16)
			if err != nil {
				return nil, fmt.Errorf("OrtError: output %s: %v", t.Name, err)
			}
			outputs[i] = v
		}
	}
	if err := o.session.Run(inputs, outputs); err != nil {
		for _, v := range outputs {
			if v != nil {
				v.Destroy()
			}
		}
		return nil, fmt.Errorf("OrtError: %v", err)
	}
	ys := make(map[string]*pb.Tensor, len(outputs))
	var bad error
	for i, v := range outputs {
		if v == nil {
			continue
		}
		if bad == nil {
			ys[o.outputs[i].Name], bad = tensorOf(o.outputs[i].Name, v)
		}
		v.Destroy()
	}
	return ys, bad
}

// tensorOf copies an ORT output into a crayfish.v1 Tensor of its own dtype.
func tensorOf(name string, v ort.Value) (*pb.Tensor, error) {
	switch t := v.(type) {
	case *ort.Tensor[float32]:
		return rawTensor(pb.DType_DTYPE_FLOAT32, t.GetShape(), t.GetData()), nil
	case *ort.Tensor[float64]:
		return rawTensor(pb.DType_DTYPE_FLOAT64, t.GetShape(), t.GetData()), nil
	case *ort.Tensor[int8]:
		return rawTensor(pb.DType_DTYPE_INT8, t.GetShape(), t.GetData()), nil
	case *ort.Tensor[int16]:
		return rawTensor(pb.DType_DTYPE_INT16, t.GetShape(), t.GetData()), nil
	case *ort.Tensor[int32]:
		return rawTensor(pb.DType_DTYPE_INT32, t.GetShape(), t.GetData()), nil
	case *ort.Tensor[int64]:
		return rawTensor(pb.DType_DTYPE_INT64, t.GetShape(), t.GetData()), nil
	case *ort.Tensor[uint8]:
		return rawTensor(pb.DType_DTYPE_UINT8, t.GetShape(), t.GetData()), nil
	case *ort.Tensor[uint16]:
		return rawTensor(pb.DType_DTYPE_UINT16, t.GetShape(), t.GetData()), nil
	case *ort.Tensor[uint32]:
		return rawTensor(pb.DType_DTYPE_UINT32, t.GetShape(), t.GetData()), nil
	case *ort.Tensor[uint64]:
		return rawTensor(pb.DType_DTYPE_UINT64, t.GetShape(), t.GetData()), nil
	case *ort.Tensor[bool]:
		return rawTensor(pb.DType_DTYPE_BOOL, t.GetShape(), t.GetData()), nil
	case *ort.CustomDataTensor:
		if ort.TensorElementDataType(t.DataType()) == ort.TensorElementDataTypeFloat16 {
			return &pb.Tensor{Dtype: pb.DType_DTYPE_FLOAT16, Shape: t.GetShape(),
				Data: append([]byte(nil), t.GetData()...)}, nil
		}
	}
	return nil, fmt.Errorf("OrtError: output %s: onnxruntime returned %T, which crayfish.v1 has no dtype for",
		pyRepr(name), v)
}

// rawTensor copies a typed slice's bytes (little-endian on every platform ORT runs this on).
func rawTensor[T any](code pb.DType, shape ort.Shape, data []T) *pb.Tensor {
	var zero T
	n := len(data) * int(unsafe.Sizeof(zero))
	raw := make([]byte, n)
	if n > 0 {
		copy(raw, unsafe.Slice((*byte)(unsafe.Pointer(&data[0])), n))
	}
	return &pb.Tensor{Dtype: code, Shape: append([]int64(nil), shape...), Data: raw}
}
