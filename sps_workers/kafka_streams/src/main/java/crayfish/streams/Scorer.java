package crayfish.streams;

import crayfish.v1.TensorOuterClass.Tensor;

/** An embedded model (serving/embedded): a validated float32 [b, *input_shape] tensor in, float32 out. */
interface Scorer extends AutoCloseable {
    /** The backend name ScoringFacts reports. */
    String name();

    Tensor score(Tensor input, long[] shape) throws Exception;

    @Override
    void close();
}
