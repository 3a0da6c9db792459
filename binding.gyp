# A thin shim so npm, node-gyp and prebuildify tooling find a native addon here.
# It carries no sources: the one real build is CMakeLists.txt, run through cmake-js.
{
  "targets": [
    {
      "target_name": "sdtune",
      "type": "none",
      "actions": [
        {
          "action_name": "cmake_js_build",
          "inputs": ["CMakeLists.txt"],
          "outputs": ["build/Release/sdtune.node"],
          "action": ["node", "scripts/build-native.mjs"]
        }
      ]
    }
  ]
}
