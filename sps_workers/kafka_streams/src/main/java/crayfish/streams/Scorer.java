package crayfish.streams;

import crayfish.v1.TensorOuterClass.Tensor;
import java.util.Map;

/** An embedded model (serving/embedded), fed tensors the operator has validated. */
interface Scorer extends AutoCloseable {
    /** The backend name ScoringFacts reports. */
    String name();

    /** A model with one float32 input and one float32 output: float32 [b, *input_shape] in. */
    Tensor score(Tensor input, long[] shape) throws Exception;

    /** Any model: one tensor per input name (each of its own dtype, sharing the batch axis) in, one per
     *  output name of the model out, in the model's output order. */
    Map<String, Tensor> scoreNamed(Map<String, Tensor> inputs) throws Exception;

    @Override
    void close();
}
