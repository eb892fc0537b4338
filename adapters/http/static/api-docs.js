// The API reference at /docs: Swagger UI reading the app's own OpenAPI document.
// A file of its own (not an inline script), so the page's CSP allows scripts from us only.
window.addEventListener("load", function () {
  window.ui = SwaggerUIBundle({
    url: "/schema/openapi.json",
    dom_id: "#swagger-ui",
    deepLinking: true,
    validatorUrl: null, // the public validator is elsewhere: nothing leaves this server
    presets: [SwaggerUIBundle.presets.apis],
    layout: "BaseLayout",
  });
});
