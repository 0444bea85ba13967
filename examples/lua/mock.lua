-- mock.lua: answers GET /mock/users itself; everything else goes to the upstream.
--
-- Shows: on_request returning req:respond(status, headers, body), and ferry.json.encode.
-- ferry frames the body (Content-Length) itself.
--
-- Run: ferry --upstream http://127.0.0.1:9000 --lua examples/lua/mock.lua
--      curl -i http://127.0.0.1:8080/mock/users

local USERS = {
    { id = 1, name = "Ada Lovelace", roles = { "admin" } },
    { id = 2, name = "Linus Torvalds", roles = setmetatable({}, ferry.json.array) },
}

function on_request(req)
    local path = req.path:match("^[^?]*")
    if req.method == "GET" and path == "/mock/users" then
        local body = ferry.json.encode({ users = USERS, count = #USERS })
        return req:respond(200, { ["Content-Type"] = "application/json" }, body)
    end
end
