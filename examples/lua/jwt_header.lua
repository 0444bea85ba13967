-- jwt_header.lua: passes the user named in a bearer token to the upstream as X-User.
--
-- !!! WARNING: THIS DOES NOT CHECK THE TOKEN'S SIGNATURE (nor its expiry). Anyone can forge a
-- !!! token with any `sub`. Use it only where the token was already verified in front of
-- !!! ferry, or for debugging; never to make an authorisation decision.
--
-- Shows: req.headers get/set/remove, ferry.base64.decode_url and ferry.json.decode. It reads
-- "Authorization: Bearer <header>.<payload>.<signature>", decodes the payload (base64url) as
-- JSON and copies its `sub` claim into X-User. An X-User sent by the client is always removed
-- first, so it cannot pretend to be someone; a token that does not decode just yields no
-- X-User.
--
-- Run: ferry --upstream http://127.0.0.1:9000 --lua examples/lua/jwt_header.lua

local function claims_of(authorization)
    local token = authorization and authorization:match("^[Bb]earer%s+(%S+)$")
    local payload = token and token:match("^[%w_-]+%.([%w_-]+)%.[%w_-]*$")
    local json = payload and ferry.base64.decode_url(payload)
    if not json then
        return nil
    end
    local ok, claims = pcall(ferry.json.decode, json)
    if ok and type(claims) == "table" then
        return claims
    end
end

function on_request(req)
    req.headers:remove("X-User")
    local claims = claims_of(req.headers:get("Authorization"))
    local sub = claims and claims.sub
    if type(sub) == "string" and sub:match("^[%w%.@_+-]+$") then
        req.headers:set("X-User", sub)
    end
end
