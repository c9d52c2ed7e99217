"""The scoring operator of the Flink job; this module is what Flink's Python workers unpickle."""

from __future__ import annotations

from sps_workers.flink import protocompat

protocompat.install()  # before anything imports crayfish.v1 (also in the Python workers)

import json  # noqa: E402
import os  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

from pyflink.common import Row, Types  # noqa: E402
from pyflink.datastream.functions import ProcessFunction, RuntimeContext  # noqa: E402

from sps_workers.runtime import EngineInstance  # noqa: E402
from sps_workers.settings import WorkerSettings  # noqa: E402

BYTES = Types.PRIMITIVE_ARRAY(Types.BYTE())
HEADERS = Types.MAP(Types.STRING(), BYTES)
# What the Kafka table source hands over (see job.SOURCE_DDL) and what the standalone source mimics.
INPUT_TYPE = Types.ROW_NAMED(["k", "v", "hdrs", "ts", "p", "o"],
                             [BYTES, BYTES, HEADERS, Types.INSTANT(), Types.INT(), Types.LONG()])
# What the Kafka table sink takes: key, value, headers, target topic (output or dead-letter).
OUTPUT_TYPE = Types.ROW_NAMED(["k", "v", "hdrs", "tp"], [BYTES, BYTES, HEADERS, Types.STRING()])


class ScoringFunction(ProcessFunction):
    """One EngineInstance per parallel subtask, built in open() in the subtask's own Python worker
    (PyFlink calls open() when the subtask's first bundle of records arrives)."""

    def __init__(self, settings_json: str, stats_dir: str | None = None):
        self.settings_json = settings_json
        self.stats_dir = stats_dir      # standalone job: when each record started / finished
        self.inst = None

    def open(self, runtime_context: RuntimeContext):
        settings = WorkerSettings.model_validate_json(self.settings_json)
        self.index = runtime_context.get_index_of_this_subtask()
        self.inst = EngineInstance(settings, engine="flink", index=self.index)
        self.topic = settings.input_topic
        self.first_ns, self.done_ns = None, []

    def process_element(self, row, ctx):
        if self.stats_dir:
            t0 = time.time_ns()
        hdrs = row[2]
        out = self.inst.handle(row[1], list(hdrs.items()) if hdrs else None, row[3].to_epoch_milli(),
                               self.topic, row[4], row[5])
        if self.stats_dir:
            self.first_ns = self.first_ns or t0
            self.done_ns.append(time.time_ns())
        yield Row(row[0], out.value, dict(out.headers) if out.headers else None, out.topic)

    def close(self):
        if self.inst is not None:
            self.inst.close()
            self.inst = None
        if self.stats_dir:
            Path(self.stats_dir, f"scoring-{self.index}.json").write_text(json.dumps(
                {"subtask": self.index, "pid": os.getpid(), "cpu_s": time.process_time(), "first_ns": self.first_ns,
                 "done_ns": self.done_ns}))
