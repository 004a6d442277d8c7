-- outbox.lua: outbox_presence(old, new) queues the webhook events of a
-- change of the present count (../outbox.go).
local function outbox_presence(old, new)
end
