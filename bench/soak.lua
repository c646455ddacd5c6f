-- bench/soak.lua - wrk script of scripts/bench --rss-soak: cycle through
-- the requests listed in a file. Arguments: REQUESTS_FILE TEMPLATE_FILE
-- API_KEY. A line of REQUESTS_FILE is a GET path, or "POST" alone: one
-- trace from the template (trace_id @ID@) re-sent under one of 50 fixed
-- trace_ids, so the ingest path is exercised but the table does not grow.
-- (wrk always runs for its -d; scripts/bench repeats short runs until the
-- request count it wants is reached.)
local paths = {}
local i = 0
local sent = 0

function init(args)
   for line in io.lines(args[1]) do
      if #line > 0 then table.insert(paths, line) end
   end
   local f = assert(io.open(args[2], "r"))
   local tpl = f:read("*a")
   f:close()
   local at = assert(tpl:find("@ID@", 1, true))
   pre = tpl:sub(1, at - 1)
   post = tpl:sub(at + 4)
   post_headers = { ["Content-Type"] = "application/json",
                    ["Authorization"] = "Bearer " .. args[3] }
end

function request()
   i = i % #paths + 1
   local p = paths[i]
   if p == "POST" then
      sent = sent + 1
      return wrk.format("POST", "/traces", post_headers,
                        pre .. "soak-" .. (sent % 50) .. post)
   end
   return wrk.format("GET", p)
end
