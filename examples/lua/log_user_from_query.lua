-- log_user_from_query.lua: one log line per exchange naming the user given in the query.
--
-- Shows: req.ctx carrying data from on_request to on_log, ferry.url.parse_query, and the info
-- table of on_log. Body hooks are for responses only, so nothing reads the request body:
-- on_request takes `user` from the query string (?user=ada), and on_log prints the method,
-- path, status, duration and that user through ferry's log.
--
-- Run: ferry --upstream http://127.0.0.1:9000 --lua examples/lua/log_user_from_query.lua

function on_request(req)
    local query = req.path:match("%?(.*)$")
    if query then
        req.ctx.user = ferry.url.parse_query(query).user
    end
end

function on_log(req, resp, info)
    ferry.log(string.format("%s %s %d %.1fms user=%s", req.method, req.path, info.status,
        info.duration_ms, req.ctx.user or "-"))
end
