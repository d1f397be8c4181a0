-- Argo CD health for codex.dev/CodexTrainingRun (Lua 5.1, as gopher-lua speaks it).
-- Healthy once the run Succeeded, Degraded when it Failed (gates not met, invalid spec,
-- retries exhausted), Suspended while its Job is suspended, Progressing otherwise.
local hs = {}
local status = obj.status
if status == nil or status.phase == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to pick up the run"
  return hs
end
local function condition(kind)
  if status.conditions ~= nil then
    for _, c in ipairs(status.conditions) do
      if c.type == kind then
        return c
      end
    end
  end
  return nil
end
local phase = status.phase
local message = status.message or phase
if phase == "Succeeded" then
  hs.status = "Healthy"
elseif phase == "Failed" then
  hs.status = "Degraded"
  local ready = condition("Ready")
  if ready ~= nil and ready.reason ~= nil then
    message = ready.reason .. ": " .. (ready.message or message)
  end
else
  local suspended = condition("Suspended")
  if suspended ~= nil and suspended.status == "True" then
    hs.status = "Suspended"
  else
    hs.status = "Progressing"
  end
  if status.progress ~= nil and status.progress.percent ~= nil then
    message = phase .. " (" .. tostring(status.progress.percent) .. "%)"
  end
end
hs.message = message
return hs
