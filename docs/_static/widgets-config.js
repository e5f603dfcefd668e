// Load the Jupyter widget manager's modules and fonts from this site rather than a CDN:
// require.js resolves `@jupyter-widgets/html-manager/dist/...` to _static/html-manager/.
(function () {
  var base = document.currentScript.src.replace(/widgets-config\.js([?#].*)?$/, "");
  require.config({paths: {"@jupyter-widgets/html-manager/dist": base + "html-manager"}});
})();
