// Renders the API's own OpenAPI document (GET /openapi.json, beside this page) with Swagger UI.
// Relative URLs keep the page working under any base path (the local emulator's /_aws/execute-api/<id>).
window.addEventListener("load", () => {
  window.ui = SwaggerUIBundle({
    url: "openapi.json",
    dom_id: "#swagger-ui",
    deepLinking: true,
    presets: [SwaggerUIBundle.presets.apis],
    layout: "BaseLayout",
    // The online validator badge would call validator.swagger.io: the page makes no outside call.
    validatorUrl: null,
  });
});
