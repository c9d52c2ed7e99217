package crayfish.streams;

import crayfish.v1.ScoringGrpc;
import crayfish.v1.ScoringOuterClass.ScoreRequest;
import crayfish.v1.ScoringOuterClass.ScoreResponse;
import crayfish.v1.TensorOuterClass.Tensor;
import io.grpc.ChannelCredentials;
import io.grpc.Grpc;
import io.grpc.InsecureChannelCredentials;
import io.grpc.ManagedChannel;
import io.grpc.Status;
import io.grpc.StatusRuntimeException;
import io.grpc.TlsChannelCredentials;
import java.io.File;
import java.io.IOException;
import java.util.Map;
import java.util.concurrent.TimeUnit;

/**
 * serving/clients/scoring.py for the JVM: one blocking ScoringGrpc stub per worker instance, a
 * deadline on every call, gRPC status codes mapped to the serving layer's errors exactly as
 * serving.errors.error_from_status does (so retries and dead-letter reasons match).
 */
final class ScoringClient implements AutoCloseable {
    static final String KIND = "scoring";
    private static final int MAX_MESSAGE_BYTES = 64 * 1024 * 1024;

    final String target;
    private final String model;
    private final long timeoutNs;
    private final ManagedChannel channel;
    private final ScoringGrpc.ScoringBlockingStub stub;
    private long ids;

    /** One answer: the output tensor, or the outputs by name (named request or several outputs), plus
     *  what the server says about itself. */
    record Answer(Tensor output, Map<String, Tensor> outputs, long serverInferenceNs, long serverQueueNs,
                  String server) {
    }

    /** A failed call, named as the Python client names it (OverloadedError, BackendError, ...). */
    static final class CallError extends Exception {
        final String pyType;
        final boolean retriable;
        final String reason;

        CallError(String pyType, String message, boolean retriable, String reason) {
            super(message);
            this.pyType = pyType;
            this.retriable = retriable;
            this.reason = reason;
        }
    }

    ScoringClient(Settings.External ext, String model) {
        this.target = ext.target;
        this.model = model;
        this.timeoutNs = Math.round(ext.timeoutS * 1e9);
        ChannelCredentials creds = InsecureChannelCredentials.create();
        if (ext.rootCertFile != null) {
            try {
                creds = TlsChannelCredentials.newBuilder().trustManager(new File(ext.rootCertFile)).build();
            } catch (IOException e) {
                throw new ConfigError("external.client_options.root_cert_file: cannot read " + ext.rootCertFile
                        + ": " + e.getMessage());
            }
        }
        channel = Grpc.newChannelBuilder(ext.target, creds).maxInboundMessageSize(MAX_MESSAGE_BYTES).build();
        stub = ScoringGrpc.newBlockingStub(channel).withMaxOutboundMessageSize(MAX_MESSAGE_BYTES);
    }

    Answer score(Tensor input) throws CallError {
        return call(ScoreRequest.newBuilder().setModel(model).setInput(input).setRequestId(Long.toString(ids++))
                .build());
    }

    /** Named inputs (ScoreRequest.inputs): the answer carries the outputs by name. */
    Answer score(Map<String, Tensor> inputs) throws CallError {
        return call(ScoreRequest.newBuilder().setModel(model).putAllInputs(inputs)
                .setRequestId(Long.toString(ids++)).build());
    }

    private Answer call(ScoreRequest req) throws CallError {
        ScoreResponse resp;
        try {
            resp = stub.withDeadlineAfter(timeoutNs, TimeUnit.NANOSECONDS).score(req);
        } catch (StatusRuntimeException e) {
            throw fromStatus(e.getStatus());
        } catch (RuntimeException e) {
            throw new CallError(e.getClass().getSimpleName(), String.valueOf(e.getMessage()), true,
                    Operator.SCORING_ERROR);
        }
        Map<String, Tensor> outputs = resp.getOutputsCount() > 0 ? resp.getOutputsMap() : null;
        try {
            if (outputs == null) {
                Tensors.check(resp.getOutput());
            } else {
                for (Tensor t : outputs.values()) {
                    Tensors.check(t);
                }
            }
        } catch (Tensors.TensorError e) {
            throw new CallError("TensorError", e.getMessage(), true, Operator.SCORING_ERROR);
        }
        String server = resp.getServer();  // what the server says it is: never filled in here
        return new Answer(outputs == null ? resp.getOutput() : null, outputs, resp.getInferenceNs(),
                resp.getQueueNs(), server);
    }

    /** serving.errors.error_from_status, plus sps_workers.external._retriable and the reason. */
    static CallError fromStatus(Status st) {
        String msg = st.getDescription() == null ? "" : st.getDescription();
        switch (st.getCode()) {
            case INVALID_ARGUMENT:
                return new CallError("BadInputError", msg, false, Operator.BAD_SHAPE);
            case NOT_FOUND:
                return new CallError("ModelNotFoundError", msg, false, Operator.UNKNOWN_MODEL);
            case RESOURCE_EXHAUSTED:
                return new CallError("OverloadedError", msg, true, Operator.SCORING_ERROR);
            case DEADLINE_EXCEEDED:
                return new CallError("DeadlineExceededError", msg, true, Operator.SCORING_ERROR);
            case UNAVAILABLE:
                return new CallError("UnavailableError", msg, true, Operator.SCORING_ERROR);
            case INTERNAL:
                return new CallError("BackendError", msg, false, Operator.SCORING_ERROR);
            default:
                return new CallError("ServingError", st.getCode().name() + ": " + msg, false, Operator.SCORING_ERROR);
        }
    }

    @Override
    public void close() {
        channel.shutdown();
        try {
            if (!channel.awaitTermination(2, TimeUnit.SECONDS)) {
                channel.shutdownNow();
            }
        } catch (InterruptedException e) {
            channel.shutdownNow();
            Thread.currentThread().interrupt();
        }
    }
}
