-- log_json_field.lua: one log line per exchange naming the operation a JSON request ran.
--
-- Shows: req:filter_body reading the request body as it streams to the upstream without
-- changing it, req.ctx carrying what it found to on_log, and ferry.json.decode in a pcall.
-- For a request whose Content-Type is application/json, the filter keeps a copy of the body
-- while passing every chunk on unchanged; at the end it decodes the copy and takes GraphQL's
-- `operationName` (which GraphQL operation the request ran), or else a top-level "action"
-- field. on_log prints the method, path, status, duration and `op=<name>` (`op=-` when there is
-- none) through ferry's log.
--
-- Bounded: at most 64 KiB are copied. A longer body is still passed on whole, but the copy is
-- dropped as soon as it would exceed the limit and the body is not decoded (its first 64 KiB are
-- not valid JSON on their own), so it logs `op=-`. So does a body that is not valid JSON, or a
-- name that is not a plain word (at most 128 bytes of letters, digits and punctuation, so a
-- client cannot put spaces or a fake field into the line). Other content types are not
-- filtered at all.
--
-- Run: ferry --upstream http://127.0.0.1:9000 --lua examples/lua/log_json_field.lua
--      curl -H 'Content-Type: application/json' \
--           -d '{"operationName":"GetUser","query":"query GetUser { me { id } }"}' \
--           http://127.0.0.1:8080/graphql

local LIMIT = 64 * 1024

local function field_of(body)
    local ok, doc = pcall(ferry.json.decode, body)
    if not ok or type(doc) ~= "table" then
        return nil
    end
    for _, name in ipairs({ "operationName", "action" }) do
        local v = doc[name]
        if type(v) == "string" and #v <= 128 and v:match("^[%w%p]+$") then
            return v
        end
    end
end

function on_request(req)
    if ferry.mime(req.headers:get("Content-Type")) ~= "application/json" then
        return
    end
    local parts, size = {}, 0
    req:filter_body(function(chunk, last)
        if parts then
            size = size + #chunk
            if size > LIMIT then
                parts = nil -- too long: stop copying, free what was kept
            else
                parts[#parts + 1] = chunk
            end
        end
        if last and parts then
            req.ctx.op = field_of(table.concat(parts))
            parts = nil
        end
        return nil -- the chunk goes on unchanged
    end)
end

function on_log(req, resp, info)
    ferry.log(string.format("%s %s %d %.1fms op=%s", req.method, req.path, info.status,
        info.duration_ms, req.ctx.op or "-"))
end
