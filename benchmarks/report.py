"""bench.md: the short human table of a bench run (the same numbers as bench.json)."""

from __future__ import annotations

from benchmarks.common import error_line


def _num(v, fmt="{:,.0f}", unit=""):
    if v is None or isinstance(v, str):
        return "n/a"
    try:
        return fmt.format(v) + unit
    except (TypeError, ValueError):
        return "n/a"


def _goal(met) -> str:
    if met is None:
        return ""
    return "met" if met else "**missed**"


def _get(d, *path):
    for k in path:
        if not isinstance(d, dict):
            return None
        d = d.get(k)
    return d


Row = tuple[str, str, str, str, str]


def rows(bench: dict) -> list[Row]:
    """The summary table's rows, part by part (a part that did not run has none)."""
    parts = bench.get("results", {})
    r: list[Row] = []
    for part, make in (("efficiency", _efficiency_rows), ("harness", _harness_rows),
                       ("parallelism", _parallelism_rows), ("codec", _codec_rows)):
        if parts.get(part) is not None:
            r += make(parts[part], bench)
    if parts.get("serving") is not None:
        r += _serving_rows(parts["serving"], bench.get("settings") or {})
    for part, make in (("tracing", _tracing_rows), ("flink_standalone", _flink_rows),
                       ("contract", _contract_rows)):
        if parts.get(part) is not None:
            r += make(parts[part], bench)
    return r


def _contract_rows(con: dict, bench: dict) -> list[Row]:
    if "error" in con:
        return [("8", "contract", "error: " + error_line(con["error"], 140), "", "")]
    r: list[Row] = []
    for p in con["points"]:
        s, n = p["single"]["total_us_median"], p["named"]["total_us_median"]
        r.append(("8", f"FFNN bsz {p['batch_size']}: per batch, single-tensor -> named-tensor contract "
                       f"(generator + worker + collector, median of {p['rounds']} alternating rounds)",
                  f"{s:.1f} -> {n:.1f} µs ({p['overhead_pct']:+.1f} %)", f"≤ +{con['goal']['overhead_pct_max']:.0f} %",
                  _goal(p["overhead_pct"] <= con["goal"]["overhead_pct_max"])))
    return r


def _efficiency_rows(eff: dict, bench: dict) -> list[Row]:
    r: list[Row] = []
    parts = bench.get("results", {})
    if "error" in eff:
        r.append(("1", "worker efficiency", "error: " + error_line(eff["error"], 140), "", ""))
    else:
        w, b = eff["worker"], eff["bare_onnxruntime"]
        r.append(("1", f"worker CPU / batch (ONNX FFNN, bsz 1, mp 1, {w['batches_measured']:,} drained)",
                  f"{w['cpu_us_per_batch']:.0f} µs (main thread {w['main_thread_cpu_us_per_batch']:.0f}"
                  f" + other threads {w['other_threads_cpu_us_per_batch']:.0f})", "", ""))
        r.append(("1", "bare ONNX Runtime call: CPU / call (latency p50)",
                  f"{b['cpu_us_per_call']:.1f} µs ({b['latency']['p50_us']:.1f} µs)", "", ""))
        op = _get(eff, "breakdown", "scoring_operator", "cpu_us_per_call")
        sc = _get(eff, "breakdown", "scorer_score", "cpu_us_per_call")
        if op is not None:
            r.append(("1", "in-process: scorer.score / scoring operator (decode+score+encode)",
                      f"{_num(sc, '{:.1f}')} / {_num(op, '{:.1f}')} µs CPU", "", ""))
        ratio = eff.get("ratio_worker_cpu_to_bare_ort_cpu")
        r.append(("1", "worker CPU / bare ONNX Runtime CPU", _num(ratio, "{:.1f}", "×"), "≤ 3×",
                  _goal(eff.get("goal_met"))))
        r.append(("1", "drain rate (pre-filled topic)", _num(w["drain_rate_bps"], unit="/s"), "", ""))
        for engine, res in (eff.get("engines") or {}).items():
            if engine == "kafka":
                continue
            ew = res["worker"]
            r.append(("1", f"{engine} worker: CPU / batch (× bare ONNX Runtime), drain rate",
                      f"{ew['cpu_us_per_batch']:.0f} µs ({_num(ew.get('ratio_cpu_to_bare_ort_cpu'), '{:.1f}', '×')}), "
                      f"{_num(ew['drain_rate_bps'], unit='/s')}", "", ""))
        st = _get(parts, "parallelism", "onnx-mp1", "sustainable_rate_bps")
        r.append(("1", "sustainable rate, same configuration (part 3)", _num(st, unit="/s"), "", ""))
    return r


def _harness_rows(har: dict, bench: dict) -> list[Row]:
    r: list[Row] = []
    st = har.get("worker_sustainable_rate_bps")
    gen = har.get("generator") or {}
    if "error" in gen:
        r.append(("2a", "generator alone", "error: " + error_line(gen["error"], 140), "", ""))
    elif gen:
        res = gen["result"]
        lat = res.get("lateness_ms") or {}
        fallback = "" if str(har.get("worker_rate_source", "")).startswith("part 3") else ", fallback rate"
        r.append(("2a", f"generator alone at {gen['target_rate_bps']:,.0f}/s (5 × {st:,.0f}/s{fallback}):"
                        " achieved / target",
                  f"{_num(res['achieved_over_target'], '{:.4f}')} ({_num(res['achieved_rate_bps'], unit='/s')},"
                  f" {res['processes']} process(es); lateness p50 {_num(lat.get('p50'), '{:.2f}')}"
                  f" / p99 {_num(lat.get('p99'), '{:.2f}')} ms)", "within 1 %", _goal(gen.get("goal_met"))))
        r.append(("2a", "generator: processes needed", str(gen.get("processes_needed") or
                                                         f"none of 1..{len(gen['attempts'])}"), "", ""))
    col = har.get("collector") or {}
    if "error" in col:
        r.append(("2b", "collector alone", "error: " + error_line(col["error"], 140), "", ""))
    elif col:
        r.append(("2b", f"collector alone ({col['records']:,} records, incl. writing its files)",
                  f"{_num(col['rate_bps'], unit='/s')} = {_num(col.get('headroom_x'), '{:.1f}', '×')} the worker"
                  f" (consume only {_num(col['consume_rate_bps'], unit='/s')})",
                  "≥ 5× worker", _goal(col.get("goal_met"))))
    return r


def _parallelism_rows(par: dict, bench: dict) -> list[Row]:
    r: list[Row] = []
    for backend, label in (("sleep", f"sleep {_get(bench, 'settings', 'sleep_delay_ms') or 10:g} ms"),
                           ("onnx", "ONNX FFNN")):
        a, b = par.get(f"{backend}-mp1") or {}, par.get(f"{backend}-mp2") or {}

        def one(x):
            return "error" if "error" in x else _num(x.get("sustainable_rate_bps"))

        def upper(x):
            return "–" if "error" in x else _num(x.get("upper_bps"))

        retried = [k for k, x in (("mp 1", a), ("mp 2", b)) if x.get("retried")]
        r.append(("3", f"{label}: sustainable rate mp 1 / mp 2",
                  f"{one(a)} / {one(b)} /s (lowest failed: {upper(a)} / {upper(b)};"
                  f" {a.get('points_tried', 0) + b.get('points_tried', 0)} points"
                  f"{'; retried after an error: ' + ', '.join(retried) if retried else ''})", "", ""))
        sc = par.get(f"{backend}_scaling")
        bounds = par.get(f"{backend}_scaling_bounds")
        if bounds:
            label_sc = f"{_num(sc, '{:.2f}', '×')} (bracket {bounds[0]:.2f}–{bounds[1]:.2f})"
        else:
            label_sc = _num(sc, "{:.2f}", "×")
        if backend == "sleep":
            r.append(("3", f"{label}: scaling mp 2 / mp 1", label_sc, "≥ 1.9×",
                      _goal(par.get("goal_met"))))
        else:
            r.append(("3", f"{label}: scaling mp 2 / mp 1", label_sc, "(capped: shared cores)", ""))
    return r


def _codec_rows(cod: dict, bench: dict) -> list[Row]:
    r: list[Row] = []
    if "error" in cod:
        r.append(("4", "codec", "error: " + error_line(cod["error"], 140), "", ""))
    else:
        shape = "×".join(map(str, cod["input"]["shape"]))
        pb, js = cod["protobuf"], cod["crayfish_json"]
        r.append(("4", f"protobuf encode+decode, float32 {shape} (median of {pb['reps']})",
                  f"{pb['total_ms_median']:.2f} ms ({pb['value_bytes'] / 1e6:.1f} MB)", "", ""))
        r.append(("4", f"crayfish-json encode+decode (median of {js['reps']})",
                  f"{js['total_ms_median']:,.0f} ms ({js['value_bytes'] / 1e6:.1f} MB)", "", ""))
        r.append(("4", "crayfish-json (vectorized codec) / protobuf",
                  _num(cod.get("ratio_json_to_protobuf"), unit="×"), "", ""))
        nv = cod.get("naive_python_json")
        if nv:
            r.append(("4", "naive Python JSON encode+decode (the issue's anchor)",
                      f"{nv['total_ms_median']:,.0f} ms", "", ""))
            r.append(("4", "naive Python JSON / protobuf", _num(cod.get("ratio_naive_json_to_protobuf"), unit="×"),
                      "≥ 1000×", _goal(cod.get("goal_met"))))
    return r


def _tracing_rows(tr: dict, bench: dict) -> list[Row]:
    r: list[Row] = []
    if "error" in tr:
        r.append(("6", "tracing", "error: " + error_line(tr["error"], 140), "", ""))
    else:
        med = tr.get("median", {})
        for name in ("off", "1%", "100%", "headers only"):
            m = med.get(name) or {}
            r.append(("6", f"worker drain, sampled: {name}", f"{m.get('drain_rate_bps', 0):,.0f} batches/s,"
                      f" {m.get('cpu_us_per_batch', 0):.0f} µs CPU/batch", "", ""))
        for name, key, goal in (("100%", "throughput_ratio_100pct", "≥ 0.90×"), ("1%", "throughput_ratio_1pct", "≥ 0.98×")):
            r.append(("6", f"throughput {name} sampled / off", _num(tr.get(key), "{:.2f}", "×"), goal,
                      _goal((tr.get("goal_met") or {}).get(name))))
        hdr = tr.get("throughput_ratio_headers_only")
        if hdr is not None:
            r.append(("6", "throughput, traceparent carried but tracing disabled / off", _num(hdr, "{:.2f}", "×"), "", ""))
        sc = tr.get("side_costs") or {}
        r.append(("6", "generator / collector µs per sampled batch",
                  f"{sc.get('generator_us_per_sampled_batch', 0):.1f} / {sc.get('collector_us_per_sampled_batch', 0):.1f}", "", ""))
    return r


def _flink_rows(fl: dict, bench: dict) -> list[Row]:
    r: list[Row] = []
    if "error" in fl:
        r.append(("7", "Flink Kafka vs standalone", "error: " + error_line(fl["error"], 140), "", ""))
    else:
        r.append(("7", "Flink FFNN bsz 1: Kafka in the loop / standalone (in-job source+sink)",
                  f"{fl.get('kafka_throughput_bps', 0):,.0f} / {fl.get('standalone_throughput_bps', 0):,.0f} b/s = "
                  + _num(fl.get("ratio_kafka_to_standalone"), "{:.2f}", "×"), "≥ 0.97×", _goal(fl.get("goal_met"))))
    return r


def _serving_rows(srv: dict, st: dict) -> list[tuple[str, str, str, str, str]]:
    r: list[tuple[str, str, str, str, str]] = []
    if "error" in srv:
        return [("5", "serving", "error: " + error_line(srv["error"], 140), "", "")]
    un = srv.get("unary") or {}
    if "error" in un:
        r.append(("5a", "unary gRPC calls", "error: " + error_line(un["error"], 140), "", ""))
    elif un:
        g, e = un["grpc"], un["embedded"]
        gl, el = g["latency"], e["latency"]
        r.append(("5a", f"unary gRPC, FFNN bsz 1, 1 sequential client ({un['calls']:,} calls): calls/s;"
                        " latency mean / p50 / p99",
                  f"{_num(g['calls_per_s'], unit='/s')}; {_num(gl['mean_us'])} / {_num(gl['p50_us'])}"
                  f" / {_num(gl['p99_us'])} µs", "", ""))
        r.append(("5a", "embedded scorer in-process, same input: latency mean / p50",
                  f"{_num(el['mean_us'], '{:.1f}')} / {_num(el['p50_us'], '{:.1f}')} µs", "", ""))
        ov = un.get("grpc_overhead_us") or {}
        r.append(("5a", "gRPC overhead per call (client − embedded): p50 / mean",
                  f"{_num(ov.get('p50'))} / {_num(ov.get('mean'))} µs (CPU per call: client"
                  f" {_num(g.get('client_cpu_us_per_call'))} + server {_num(g.get('server_cpu_us_per_call'))} µs)",
                  "", ""))
    ba = srv.get("batching") or {}
    if "error" in ba:
        r.append(("5b", "dynamic batching", "error: " + error_line(ba["error"], 140), "", ""))
    elif ba:
        for d, label in ((ba, "ONNX FFNN"),
                         (ba.get("sleep"), f"sleep {_get(ba, 'sleep', 'backend_options', 'delay_ms') or 0:g} ms")):
            if not d:
                continue
            off, on = d["off"], d["on"]
            r.append(("5b", f"open load, {d['in_flight']} calls in flight, {label}, 1 instance: calls/s batching"
                            f" off / on ({_num(_get(on, 'batching', 'max_batch_size'))} rows,"
                            f" {_num(_get(on, 'batching', 'max_queue_delay_us'))} µs)",
                      f"{_num(off['calls_per_s'])} / {_num(on['calls_per_s'])} /s (est. avg batch rows"
                      f" {_num(off.get('est_avg_batch_rows'), '{:.1f}')}"
                      f" / {_num(on.get('est_avg_batch_rows'), '{:.1f}')})",
                      "", ""))
            r.append(("5b", f"{label}: dynamic batching gain on / off", _num(d.get("ratio_on_to_off"), "{:.2f}", "×"),
                      "", ""))
    pi = srv.get("pipelining") or {}
    if "error" in pi:
        r.append(("5c", "pipelined vs blocking", "error: " + error_line(pi["error"], 140), "", ""))
    elif pi:
        for key, label in (("sleep", f"sleep {st.get('serving_sleep_delay_ms', 5):g} ms server,"
                                     f" {st.get('serving_sleep_instances', 8)} instances"),
                           ("onnx", "ONNX FFNN server, 1 instance")):
            b, p = pi.get(f"{key}-blocking") or {}, pi.get(f"{key}-pipelined") or {}

            def one(x):
                return "error" if "error" in x else _num(x.get("sustainable_rate_bps"))

            def upper(x):
                return "–" if "error" in x else _num(x.get("upper_bps"))

            retried = [k for k, x in (("blocking", b), ("pipelined", p)) if x.get("retried")]
            r.append(("5c", f"external {label}, mp 1: sustainable rate blocking / pipelined"
                            f" ({pi.get('max_in_flight')} in flight)",
                      f"{one(b)} / {one(p)} /s (lowest failed: {upper(b)} / {upper(p)};"
                      f" {b.get('points_tried', 0) + p.get('points_tried', 0)} points"
                      f"{'; retried after an error: ' + ', '.join(retried) if retried else ''})", "", ""))
            sc, bounds = pi.get(f"{key}_ratio"), pi.get(f"{key}_ratio_bounds")
            value = (f"{_num(sc, '{:.2f}', '×')} (bracket {bounds[0]:.2f}–{bounds[1]:.2f})" if bounds
                     else _num(sc, "{:.2f}", "×"))
            if key == "sleep":
                goal = _get(pi, "goal", "sleep_ratio_min")
                r.append(("5c", f"{label}: pipelined / blocking", value,
                          f"≥ {goal:g}× (≫ 1)" if goal else "", _goal(pi.get("goal_met"))))
            else:
                r.append(("5c", f"{label}: pipelined / blocking", value, "", ""))
    return r


def markdown(bench: dict) -> str:
    host = bench.get("host", {})
    head = (f"# Crayfish Mesh bench{' (quick: smoke test, numbers not meaningful)' if bench.get('quick') else ''}\n\n"
            f"{bench.get('started', '')}, {bench.get('wall_s', 0):.0f} s; host {host.get('cpu_model') or '?'},"
            f" {host.get('cpu_count')} logical CPUs, {host.get('memory_gib')} GiB; git"
            f" {str(_get(host, 'git', 'revision') or '?')[:10]}{' (dirty)' if _get(host, 'git', 'dirty') else ''}\n\n")
    lines = ["| part | measurement | value | goal | |", "|---|---|---|---|---|"]
    for row in rows(bench):
        lines.append("| " + " | ".join(c.replace("|", "/") for c in row) + " |")
    errors = [f"- {k}: {error_line(v['error'], 400)}" for k, v in bench.get("results", {}).items()
              if isinstance(v, dict) and "error" in v]
    for k, v in (bench.get("results", {}).get("parallelism") or {}).items():
        if isinstance(v, dict):
            tries = v.get("errors_before", []) + ([v["error"]] if "error" in v else [])
            errors += [f"- parallelism {k}, attempt {i + 1}: {error_line(e, 400)}" for i, e in enumerate(tries)]
    srv = bench.get("results", {}).get("serving") or {}
    for k in ("unary", "batching", "pipelining"):
        if isinstance(srv.get(k), dict) and "error" in srv[k]:
            errors.append(f"- serving {k}: {error_line(srv[k]['error'], 400)}")
    for k, v in (srv.get("pipelining") or {}).items():
        if isinstance(v, dict):
            tries = v.get("errors_before", []) + ([v["error"]] if "error" in v else [])
            errors += [f"- serving {k}, attempt {i + 1}: {error_line(e, 400)}" for i, e in enumerate(tries)]
    tail = ("\n\nErrors:\n" + "\n".join(errors)) if errors else ""
    return head + "\n".join(lines) + tail + "\n\nAll numbers, settings and host facts: bench.json\n"
