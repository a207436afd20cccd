const re = /(\d+)-(\d+)/;
function parse(s) {
  const m = re.exec(s);
  return m ? [Number(m[1]), Number(m[2])] : null;
}
module.exports = { parse };
