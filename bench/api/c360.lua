-- wrk script: GET /api/v1/profiles/{id} with a bearer token, at a target rate.
--
-- Environment: IDS (file of profile ids, one a line), TOKEN, RATE (requests/s over all
-- connections; 0 = as fast as possible), CONNECTIONS (as given to wrk -c), MODE
-- (`random`: any id; `seq`: each id once, from OFFSET on, split between threads so no
-- id is read twice — every read is then a cache miss when the cache was emptied).
local ids = {}
local threads = {}
local counter = 1

function setup(thread)
    thread:set("index", counter)
    counter = counter + 1
    table.insert(threads, thread)
end

function init(args)
    for line in io.lines(os.getenv("IDS")) do
        ids[#ids + 1] = line
    end
    token = os.getenv("TOKEN")
    mode = os.getenv("MODE") or "random"
    local rate = tonumber(os.getenv("RATE") or "0")
    local connections = tonumber(os.getenv("CONNECTIONS") or "1")
    local nthreads = tonumber(os.getenv("THREADS") or "1")
    -- Each connection waits this long after each response: CONNECTIONS / RATE seconds,
    -- so all connections together send about RATE requests per second.
    pause = 0
    if rate > 0 then
        pause = connections * 1000 / rate
    end
    local offset = math.min(tonumber(os.getenv("OFFSET") or "0"), #ids - nthreads)
    local span = math.max(1, math.floor((#ids - offset) / nthreads))
    next_id = offset + (index - 1) * span + 1
    last_id = math.min(next_id + span - 1, #ids)
    math.randomseed(index * 7919)
end

function delay()
    return pause
end

function request()
    local id
    if mode == "seq" then
        if next_id > last_id then
            next_id = last_id -- out of fresh ids: repeat the last (reported as a cache hit)
        end
        id = ids[next_id]
        next_id = next_id + 1
    else
        id = ids[math.random(#ids)]
    end
    return wrk.format("GET", "/api/v1/profiles/" .. id, { ["Authorization"] = "Bearer " .. token })
end

function done(summary, latency, requests)
    local secs = summary.duration / 1e6
    local bad = summary.errors.status + summary.errors.connect + summary.errors.read
        + summary.errors.write + summary.errors.timeout
    io.write(string.format("RESULT requests=%d rate=%.0f p50_ms=%.3f p90_ms=%.3f p99_ms=%.3f max_ms=%.3f errors=%d\n",
        summary.requests, summary.requests / secs,
        latency:percentile(50) / 1000, latency:percentile(90) / 1000,
        latency:percentile(99) / 1000, latency.max / 1000, bad))
end
