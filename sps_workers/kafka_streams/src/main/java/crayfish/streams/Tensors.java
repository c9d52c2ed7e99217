package crayfish.streams;

import com.google.protobuf.ByteString;
import crayfish.v1.TensorOuterClass.DType;
import crayfish.v1.TensorOuterClass.Tensor;
import java.math.BigInteger;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.util.List;

/**
 * crayfish/tensor.py for Java: a Tensor is raw little-endian bytes in C order plus dtype and shape.
 * {@link #check} is from_tensor's validation, with the same messages.
 */
final class Tensors {
    private Tensors() {
    }

    /** A Tensor that failed from_tensor's checks (Python: crayfish.tensor.TensorError). */
    static final class TensorError extends Exception {
        TensorError(String message) {
            super(message);
        }
    }

    /** The numpy names of every DType, in code order (crayfish.tensor.DTYPE_NAMES). */
    static final List<String> DTYPE_NAMES = List.of("float32", "float64", "float16", "int8", "int16", "int32",
            "int64", "uint8", "uint16", "uint32", "uint64", "bool");

    /** DType code of a numpy dtype name; -1 when unknown. */
    static int dtypeCode(String name) {
        int i = DTYPE_NAMES.indexOf(name);
        return i < 0 ? -1 : i + 1;
    }

    /** numpy dtype name and item size by DType code; null name = unknown code. */
    static String dtypeName(int code) {
        switch (code) {
            case DType.DTYPE_FLOAT32_VALUE: return "float32";
            case DType.DTYPE_FLOAT64_VALUE: return "float64";
            case DType.DTYPE_FLOAT16_VALUE: return "float16";
            case DType.DTYPE_INT8_VALUE: return "int8";
            case DType.DTYPE_INT16_VALUE: return "int16";
            case DType.DTYPE_INT32_VALUE: return "int32";
            case DType.DTYPE_INT64_VALUE: return "int64";
            case DType.DTYPE_UINT8_VALUE: return "uint8";
            case DType.DTYPE_UINT16_VALUE: return "uint16";
            case DType.DTYPE_UINT32_VALUE: return "uint32";
            case DType.DTYPE_UINT64_VALUE: return "uint64";
            case DType.DTYPE_BOOL_VALUE: return "bool";
            default: return null;
        }
    }

    static int itemSize(int code) {
        switch (code) {
            case DType.DTYPE_FLOAT64_VALUE: case DType.DTYPE_INT64_VALUE: case DType.DTYPE_UINT64_VALUE: return 8;
            case DType.DTYPE_FLOAT32_VALUE: case DType.DTYPE_INT32_VALUE: case DType.DTYPE_UINT32_VALUE: return 4;
            case DType.DTYPE_FLOAT16_VALUE: case DType.DTYPE_INT16_VALUE: case DType.DTYPE_UINT16_VALUE: return 2;
            default: return 1;
        }
    }

    /** from_tensor's checks; returns the shape. */
    static long[] check(Tensor t) throws TensorError {
        int code = t.getDtypeValue();
        String name = dtypeName(code);
        if (name == null) {
            throw new TensorError("unknown tensor dtype code " + code);
        }
        long[] shape = new long[t.getShapeCount()];
        BigInteger count = BigInteger.ONE;
        boolean negative = false;
        for (int i = 0; i < shape.length; i++) {
            shape[i] = t.getShape(i);
            negative |= shape[i] < 0;
            count = count.multiply(BigInteger.valueOf(shape[i]));
        }
        if (negative || count.signum() < 0) {
            throw new TensorError("negative dimension in shape " + Py.tuple(shape));
        }
        BigInteger need = count.multiply(BigInteger.valueOf(itemSize(code)));
        if (!need.equals(BigInteger.valueOf(t.getData().size()))) {
            throw new TensorError("tensor data has " + t.getData().size() + " bytes, shape " + Py.tuple(shape)
                    + " of " + name + " needs " + need);
        }
        return shape;
    }

    static Tensor float32(long[] shape, ByteString littleEndianData) {
        Tensor.Builder b = Tensor.newBuilder().setDtype(DType.DTYPE_FLOAT32).setData(littleEndianData);
        for (long d : shape) {
            b.addShape(d);
        }
        return b.build();
    }

    static Tensor of(int code, long[] shape, ByteString littleEndianData) {
        Tensor.Builder b = Tensor.newBuilder().setDtypeValue(code).setData(littleEndianData);
        for (long d : shape) {
            b.addShape(d);
        }
        return b.build();
    }

    /** Zeros of {@code code}, shape [rows, *item]. */
    static Tensor zeros(int code, long rows, long[] item) {
        long[] shape = new long[item.length + 1];
        shape[0] = rows;
        long n = rows;
        for (int i = 0; i < item.length; i++) {
            shape[i + 1] = item[i];
            n *= item[i];
        }
        return of(code, shape, ByteString.copyFrom(new byte[Math.toIntExact(n * itemSize(code))]));
    }

    /** The tensor's shape (unchecked). */
    static long[] shape(Tensor t) {
        long[] shape = new long[t.getShapeCount()];
        for (int i = 0; i < shape.length; i++) {
            shape[i] = t.getShape(i);
        }
        return shape;
    }

    /** The tensor's bytes in {@code reuse} (a direct buffer in native order, little-endian here), or in
     *  a new one when it is too small; flipped, ready to read. */
    static ByteBuffer direct(Tensor t, ByteBuffer reuse) {
        ByteString data = t.getData();
        ByteBuffer b = reuse;
        if (b == null || b.capacity() < data.size()) {
            b = ByteBuffer.allocateDirect(data.size()).order(ByteOrder.nativeOrder());
        }
        b.clear();
        data.copyTo(b);
        b.flip();
        return b;
    }
}
