// The sample service of Aeraki's MetaRouter tutorial, plus a second method
// so routing by method has something to tell apart.
namespace py hello

service SayHello {
  string sayHello(1: string name),
  string sayGoodbye(1: string name),
}
