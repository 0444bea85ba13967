-- redact_json.lua: hides secrets in JSON responses.
--
-- Shows: resp:filter_body buffering a whole body (it returns "" until the last chunk), and
-- ferry.json.decode/encode. Values of members named password, token, secret or api_key (any
-- case, at any depth) become "[redacted]". A body that is not valid JSON is passed unchanged
-- (with a warning). The whole body is held in the script's memory, so a body larger than the
-- script's memory limit fails the response.
--
-- Run: ferry --upstream http://127.0.0.1:9000 --lua examples/lua/redact_json.lua

local SECRET = { password = true, token = true, secret = true, api_key = true }

local function redact(v)
    if type(v) ~= "table" then
        return v
    end
    for k, x in pairs(v) do
        if type(k) == "string" and SECRET[k:lower()] then
            v[k] = "[redacted]"
        else
            redact(x)
        end
    end
    return v
end

local function is_json(content_type)
    local t = ferry.mime(content_type)
    return t == "application/json" or (t ~= nil and t:sub(-5) == "+json")
end

function on_response(req, resp)
    if not is_json(resp.headers:get("Content-Type")) then
        return
    end
    local parts = {}
    resp:filter_body(function(chunk, last)
        parts[#parts + 1] = chunk
        if not last then
            return ""
        end
        local body = table.concat(parts)
        parts = nil
        local ok, doc = pcall(ferry.json.decode, body)
        if not ok then
            ferry.log("warn", "redact_json: passed unchanged: " .. doc)
            return body
        end
        return ferry.json.encode(redact(doc))
    end)
end
