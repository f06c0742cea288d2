// The sample service of Aeraki's MetaRouter tutorial, plus a second method
// so routing by method has something to tell apart, and an echo of a THeader
// info header so tests can prove an independent implementation reads the
// headers a proxy added.
namespace py hello
namespace cpp hello

service SayHello {
  string sayHello(1: string name),
  string sayGoodbye(1: string name),
  string echoHeader(1: string key),
}
