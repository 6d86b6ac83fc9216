-- Shared by get.lua and ingest.lua: count answers, then print what bench/wrkrun.py parses.
-- Expects the globals ok, other (per thread) and threads (all threads, set in setup()).

function response(status, headers, body)
  if status == 200 then ok = ok + 1 else other = other + 1 end
end

function done(summary, latency, requests)
  local ok_total, other_total = 0, 0
  for _, thread in ipairs(threads) do
    ok_total = ok_total + (thread:get("ok") or 0)
    other_total = other_total + (thread:get("other") or 0)
  end
  local e = summary.errors
  io.write(string.format("BENCH requests %d\n", summary.requests))
  io.write(string.format("BENCH ok %d\n", ok_total))
  io.write(string.format("BENCH non200 %d\n", other_total))
  io.write(string.format("BENCH duration_us %d\n", summary.duration))
  io.write(string.format("BENCH errors %d %d %d %d %d\n", e.connect, e.read, e.write, e.status, e.timeout))
  for _, q in ipairs({50, 90, 99}) do
    io.write(string.format("BENCH p%d_us %d\n", q, latency:percentile(q)))
  end
  io.write(string.format("BENCH max_us %d\n", latency.max))
end
