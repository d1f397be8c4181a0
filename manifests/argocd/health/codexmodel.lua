-- Argo CD health for codex.dev/CodexModel (Lua 5.1). Follows the Deployment-style
-- conditions the operator sets: Available, Progressing and Degraded.
local hs = {}
local status = obj.status
if status == nil or status.conditions == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to roll out the model"
  return hs
end
if status.observedGeneration ~= nil and obj.metadata.generation ~= nil
    and status.observedGeneration < obj.metadata.generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe the latest spec"
  return hs
end
local found = {}
for _, c in ipairs(status.conditions) do
  found[c.type] = c
end
local function is_true(kind)
  return found[kind] ~= nil and found[kind].status == "True"
end
local function describe(kind, fallback)
  local c = found[kind]
  if c ~= nil and c.message ~= nil and c.message ~= "" then
    return c.message
  end
  return fallback
end
if is_true("Degraded") then
  hs.status = "Degraded"
  hs.message = describe("Degraded", "Degraded")
elseif is_true("Available") and not is_true("Progressing") then
  hs.status = "Healthy"
  hs.message = describe("Available", "Available")
elseif is_true("Available") then
  -- Serving while a new adapter rolls out: healthy traffic, rollout still moving.
  hs.status = "Progressing"
  hs.message = describe("Progressing", "Rolling out")
else
  hs.status = "Progressing"
  hs.message = describe("Progressing", describe("Available", "Not available yet"))
end
return hs
