-- bench/post_single.lua - wrk script of scripts/bench: one trace per
-- POST /traces, a fresh trace_id on every request (so nothing is a
-- replacement). Arguments: TEMPLATE_FILE API_KEY TAG. The template is
-- one trace's JSON with the trace_id written as @ID@.
local counter = 0
local nthreads = 0

function setup(thread)
   thread:set("tid", nthreads)
   nthreads = nthreads + 1
end

function init(args)
   local f = assert(io.open(args[1], "r"))
   local tpl = f:read("*a")
   f:close()
   local at = assert(tpl:find("@ID@", 1, true))
   pre = tpl:sub(1, at - 1)
   post = tpl:sub(at + 4)
   tag = args[3] .. "-" .. tostring(tid) .. "-"
   wrk.method = "POST"
   wrk.headers["Content-Type"] = "application/json"
   wrk.headers["Authorization"] = "Bearer " .. args[2]
end

function request()
   counter = counter + 1
   return wrk.format(nil, "/traces", nil, pre .. tag .. counter .. post)
end
