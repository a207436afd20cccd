const { execSync } = require("child_process");
function log(branch) {
  return execSync(`git log ${branch} --oneline`).toString();
}
module.exports = { log };
