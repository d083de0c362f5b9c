local fwx = require "fwx"
local H = require "spec.helper"

describe("PostTaskCompletion", function()
  before_each(H.before)
  after_each(H.after)

  it("never runs inline: the sink runs from run(), later", function()
    local fw = H.new()
    local ran = false
    fw:PostTaskCompletion(function(ud) ran = ud end, "x")
    assert.is_false(ran)
    H.run(fw)
    assert.equal("x", ran)
  end)

  it("delivers one notification per post, in order, never coalesced", function()
    local fw = H.new()
    local seen = {}
    for i = 1, 1000 do fw:PostTaskCompletion(function(ud) seen[#seen + 1] = ud end, i) end
    H.run(fw)
    assert.equal(1000, #seen)
    for i = 1, 1000 do assert.equal(i, seen[i]) end
  end)

  it("calls CompleteTask on an object sink", function()
    local fw = H.new()
    local obj = { got = nil }
    function obj:CompleteTask(ud) self.got = ud end
    fw:post_task_completion(obj, 42)
    H.run(fw)
    assert.equal(42, obj.got)
  end)

  it("rejects a sink that is neither a function nor an object with CompleteTask", function()
    local fw = H.new()
    assert.has_error(function() fw:PostTaskCompletion({}, 1) end,
      "bad argument #1 to 'PostTaskCompletion' (sink must be a function or an object with a CompleteTask method)")
    assert.equal(0, fw:pending())
  end)
end)
