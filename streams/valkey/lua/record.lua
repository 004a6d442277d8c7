-- record.lua: history_record(old, new) records a change of the present
-- count in the community's history buckets (../history.go).
local function history_record(old, new)
end
