-- wrk script for bench/register_alt.sh: POSTs a new instance (TTL check) on each request,
-- spread over 1,000 services.
local counter = 0
local thread_id = 0
function setup(thread) thread:set("tid", thread_id); thread_id = thread_id + 1 end
request = function()
  counter = counter + 1
  local i = counter
  local svc = "svc-" .. (i % 1000)
  local body = string.format('{"id":"inst-%d-%d","address":"10.%d.%d.%d","port":%d,"weight":100,"tags":["signpost-bench","eu-west-1a","v1.2.3"],"metadata":{"version":"1.2.3","zone":"eu-west-1a","owner":"team-platform-discovery@example.org","commit":"0123456789abcdef0123456789abcdef%08d"},"check":{"ttl":"30000ms"}}', tid or 0, i, (i/65536)%256, (i/256)%256, i%256, 1024 + i % 40000, i % 100000000)
  return wrk.format("POST", "/api/v1/services/" .. svc .. "/instances", {["Content-Type"]="application/json"}, body)
end
