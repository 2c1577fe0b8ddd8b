"use strict";
require("a-module-that-does-not-exist");
exports.handler = async () => "never";
