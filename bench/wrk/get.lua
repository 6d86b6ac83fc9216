-- GET the paths listed in the file named by BENCH_WRK_PATHS, in turn, with the API key.
local paths = {}
for line in io.lines(os.getenv("BENCH_WRK_PATHS")) do
  if #line > 0 then table.insert(paths, line) end
end
local auth = os.getenv("BENCH_WRK_AUTH")
local headers = {}
if auth and #auth > 0 then headers["Authorization"] = auth end
-- global: report.lua's done() walks it
threads = {}
local counter = 0
-- globals, so that setup() can set them and done() can read them through thread:get/set
ok, other, offset = 0, 0, 0

function setup(thread)
  thread:set("offset", #threads * 7919)
  table.insert(threads, thread)
end

function init(args)
  counter = offset
end

function request()
  counter = counter + 1
  return wrk.format("GET", paths[counter % #paths + 1], headers)
end

-- response() and done(): the counters and the BENCH lines bench/wrkrun.py parses
dofile(os.getenv("BENCH_WRK_DIR") .. "/report.lua")
