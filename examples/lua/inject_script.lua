-- inject_script.lua: adds a <script> tag to HTML pages on their way to the client.
--
-- Shows: on_response, ferry.mime, and resp:filter_body keeping state between chunks. The tag
-- goes right before the first </body> (any case). A </body> can be split across two chunks, so
-- the filter holds back the last #"</body>" - 1 bytes of each chunk and looks at them again
-- with the next one; the held-back tail is sent at the end. Bodies without </body> and
-- responses that are not text/html pass unchanged.
--
-- The tag loads /__ferry/inject.js, which on_request answers from ferry itself (the origin never
-- sees that path): it marks the page, so a browser shows that the script ran.
--
-- Run: ferry --upstream http://127.0.0.1:9000 --lua examples/lua/inject_script.lua
--      (or, for HTTPS sites, through the intercepting forward proxy:
--       ferry --forward --intercept --lua examples/lua/inject_script.lua)

local TAG = '<script src="/__ferry/inject.js"></script>'
local CLOSE = "</body>"
local HOLD = #CLOSE - 1

local JS = [[
document.documentElement.setAttribute("data-ferry", "injected");
var note = document.createElement("div");
note.id = "ferry-injected";
note.textContent = "injected by ferry";
document.body.appendChild(note);
]]

function on_request(req)
    if req.path:match("^[^?]*") == "/__ferry/inject.js" then
        return req:respond(200, { ["Content-Type"] = "application/javascript",
                                  ["Cache-Control"] = "no-store" }, JS)
    end
end

function on_response(req, resp)
    if ferry.mime(resp.headers:get("Content-Type")) ~= "text/html" then
        return
    end
    local tail, done = "", false
    resp:filter_body(function(chunk, last)
        if done then
            return chunk
        end
        local buf = tail .. chunk
        local at = buf:lower():find(CLOSE, 1, true)
        if at then
            done, tail = true, ""
            return buf:sub(1, at - 1) .. TAG .. buf:sub(at)
        end
        if last then
            tail = ""
            return buf
        end
        if #buf <= HOLD then
            tail = buf
            return ""
        end
        tail = buf:sub(-HOLD)
        return buf:sub(1, #buf - HOLD)
    end)
end
