-- POST the webhook mix: templates and deck come from the Lua file named by BENCH_WRK_DATA,
-- written by bench/wrkrun.py from bench/mix.py, so wrk sends exactly what the Python client
-- would. Each thread varies the ids with its own prefix; 200s are counted per thread.
local data = dofile(os.getenv("BENCH_WRK_DATA"))
local templates, deck, prefix = data.templates, data.deck, data.prefix
-- global: report.lua's done() walks it
threads = {}
local counter = 0
-- globals, so that setup() can set them and done() can read them through thread:get/set
ok, other, tid = 0, 0, "0"

function setup(thread)
  thread:set("tid", tostring(#threads + 1))
  table.insert(threads, thread)
end

function request()
  local j = counter % #deck + 1
  local passes = math.floor(counter / #deck)
  local slot = deck[j]
  local t = templates[slot[1]]
  local round = passes * slot[3] + slot[2]
  local sfx = prefix .. tid .. string.format("%07d", round)
  counter = counter + 1
  return wrk.format("POST", t.path, t.headers, table.concat(t.parts, sfx))
end

-- response() and done(): the counters and the BENCH lines bench/wrkrun.py parses
dofile(os.getenv("BENCH_WRK_DIR") .. "/report.lua")
